"""Supervisor grants through the SDK and the real server: signed, shown, bounded, never forged.

A therapist grants, the client's app shows it at once, the supervisor reads live and history,
and the grant's end is seen by both participants. A supervisor without a grant in force gets
nothing; a grant the server forges or alters (in the delivery stream or in the listing read at
login) is rejected by the participants' SDKs and never makes the supervisor a recipient.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from securemsg.client import (
    Client,
    ClientError,
    Event,
    GrantEnded,
    GrantEndReason,
    GrantRejected,
    Message,
    RequestFailed,
    SupervisorGranted,
)
from securemsg.client.history import history_path
from securemsg.crypto.grants import GRANT_PURPOSE
from securemsg.crypto.keys import DeviceKeys
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from tests.client.conftest import OpenClient, Pair
from tests.client.http_relay import HttpRelay
from tests.client.relays import HostileRelay

HOUR_MS = 3_600_000
E = TypeVar("E")


def now_ms() -> int:
    return int(time.time() * 1000)


async def expect(client: Client, kind: type[E], *, timeout: float = 10) -> E:
    """The next event of `kind`; events of other kinds on the way must be harmless."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event()
            if isinstance(event, kind):
                return event
            assert not isinstance(event, GrantRejected | Message), event


async def events_for(client: Client, seconds: float) -> list[Event]:
    """Every event that arrives within `seconds`."""
    seen: list[Event] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                seen.append(await client.next_event())
    return seen


def stored_recipients(pair: Pair, username: str, conversation: uuid.UUID) -> list[set[uuid.UUID]]:
    """The devices each stored message of the conversation is wrapped to (read as a participant)."""
    token = pair.server.login(username)
    items = httpx.get(
        f"{pair.server.http_url}/v1/conversations/{conversation}/history",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()["items"]
    return [
        {
            uuid.UUID(bytes=d)
            for d in parse_envelope(
                base64.b64decode(i["envelope"]), EnvelopeLimits()
            ).recipient_devices
        }
        for i in items
        if i["kind"] == "message"
    ]


def make_supervisor(pair: Pair, name: str = "sam") -> uuid.UUID:
    return uuid.UUID(pair.server.create_account(name, "supervisor"))


async def test_granted_supervisor_reads_live_and_history_and_both_participants_see_the_grant_end(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    async with (
        open_client("tess") as tess,
        open_client("carl") as carl,
        open_client("sam") as sam,
    ):
        assert sam.account is not None
        await carl.send(conversation, "before the grant")
        assert (await expect(tess, Message)).text == "before the grant"
        await tess.send(conversation, "before the grant, from tess")
        assert (await expect(carl, Message)).text == "before the grant, from tess"

        grant = await tess.grant_supervisor(
            conversation, sam.account, until_ms=now_ms() + HOUR_MS, include_history=True
        )
        shown = await expect(carl, SupervisorGranted)  # the client's app shows it at once
        assert shown.grant == grant
        assert shown.grant.supervisor == sam.account and shown.grant.therapist == tess.account
        assert (await expect(tess, SupervisorGranted)).grant.id == grant.id
        assert (await expect(sam, SupervisorGranted)).grant.id == grant.id

        await carl.send(conversation, "while supervised, from carl")
        await tess.send(conversation, "while supervised, from tess")
        assert (await expect(tess, Message)).text == "while supervised, from carl"
        assert (await expect(carl, Message)).text == "while supervised, from tess"
        live = [await expect(sam, Message), await expect(sam, Message)]
        assert [(m.sender, m.text) for m in live] == [
            (carl.account, "while supervised, from carl"),
            (tess.account, "while supervised, from tess"),
        ]
        with pytest.raises(ClientError, match="cannot send"):
            await sam.send(conversation, "a supervisor never writes")
        assert not history_path(pair.keystore("sam")).exists()  # what it read stays on the server

        assert await tess.share_history(grant.id) == 4  # its own messages too
        history = await sam.history(conversation)
        assert [(m.sender, m.text) for m in history] == [
            (carl.account, "before the grant"),
            (tess.account, "before the grant, from tess"),
            (carl.account, "while supervised, from carl"),
            (tess.account, "while supervised, from tess"),
        ]

        ended = await carl.revoke_grant(grant.id)  # the client may end it too
        assert ended is not None and ended.revoked_ms is not None
        for participant in (tess, carl):
            seen = await expect(participant, GrantEnded)
            assert seen.grant.id == grant.id and seen.reason is GrantEndReason.REVOKED
        await carl.send(conversation, "after the grant")
        assert not [e for e in await events_for(sam, 1.5) if isinstance(e, Message)]
        with pytest.raises(RequestFailed) as refused:
            await sam.history(conversation)
        assert refused.value.code == "no_grant"
        assert [g.revoked_ms is not None for g in await tess.grants(conversation)] == [True]
    assert sam_device_in(pair, "sam") not in stored_recipients(pair, "carl", conversation)[-1]


def sam_device_in(pair: Pair, name: str) -> uuid.UUID:
    token = pair.server.login(name)
    account = httpx.get(
        f"{pair.server.http_url}/v1/me", headers={"Authorization": f"Bearer {token}"}
    ).json()["account"]
    devices = httpx.get(
        f"{pair.server.http_url}/v1/accounts/{account}/devices",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["certificates"]
    (device,) = devices
    return uuid.UUID(device)


@pytest.mark.parametrize("case", ["never", "expired", "revoked", "other-conversation"])
async def test_supervisor_without_a_grant_in_force_gets_nothing_through_the_sdk(
    pair: Pair, open_client: OpenClient, case: str
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    pair.server.create_account("cleo", "client")
    other = uuid.UUID(pair.server.create_conversation("tess", "cleo"))
    async with (
        open_client("tess") as tess,
        open_client("carl") as carl,
        open_client("sam") as sam,
    ):
        assert sam.account is not None
        if case == "expired":
            grant = await tess.grant_supervisor(
                conversation, sam.account, until_ms=now_ms() + 1500, include_history=True
            )
            assert (await expect(carl, SupervisorGranted)).grant.id == grant.id
            ended = await expect(carl, GrantEnded)
            assert ended.reason is GrantEndReason.EXPIRED and ended.ended_ms == grant.until_ms
        elif case == "revoked":
            grant = await tess.grant_supervisor(
                conversation, sam.account, until_ms=now_ms() + HOUR_MS, include_history=True
            )
            await expect(carl, SupervisorGranted)
            await tess.revoke_grant(grant.id)
            assert (await expect(carl, GrantEnded)).reason is GrantEndReason.REVOKED
        elif case == "other-conversation":
            await tess.grant_supervisor(
                other, sam.account, until_ms=now_ms() + HOUR_MS, include_history=True
            )
        await carl.send(conversation, "private, from carl")
        await tess.send(conversation, "private, from tess")
        assert not [e for e in await events_for(sam, 1.5) if isinstance(e, Message)]
        with pytest.raises(RequestFailed) as refused:
            await sam.history(conversation)
        assert refused.value.code == "no_grant"
    sam_device = sam_device_in(pair, "sam")
    assert all(sam_device not in wraps for wraps in stored_recipients(pair, "carl", conversation))


async def test_client_that_connects_after_the_grant_was_made_learns_of_it_once(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    sam = make_supervisor(pair)
    async with open_client("carl"):
        pass  # carl's device exists, then goes offline
    async with open_client("tess") as tess:
        grant = await tess.grant_supervisor(conversation, sam, until_ms=now_ms() + HOUR_MS)
    async with open_client("carl") as carl:
        seen = await events_for(carl, 1.5)  # the listing read at login, then the queued event
        granted = [e for e in seen if isinstance(e, SupervisorGranted)]
        assert [e.grant for e in granted] == [grant]
        assert not [e for e in seen if isinstance(e, GrantRejected)]
        assert await carl.grants(conversation) == [grant]


async def test_new_device_of_the_client_learns_of_a_grant_made_before_it_existed(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    sam = make_supervisor(pair)
    async with open_client("tess") as tess:
        grant = await tess.grant_supervisor(conversation, sam, until_ms=now_ms() + HOUR_MS)
    async with open_client("carl") as carl:  # first login: no grant event was queued for it
        assert (await expect(carl, SupervisorGranted)).grant == grant


async def test_client_encrypts_to_the_supervisor_of_a_grant_it_learned_of_at_login(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    async with open_client("tess") as tess, open_client("sam") as sam:
        assert sam.account is not None
        grant = await tess.grant_supervisor(conversation, sam.account, until_ms=now_ms() + HOUR_MS)
        async with open_client("carl") as carl:
            assert (await expect(carl, SupervisorGranted)).grant.id == grant.id
            await carl.send(conversation, "first words")
        assert (await expect(sam, Message)).text == "first words"


# -- a server that forges or alters grants --------------------------------------------------------


def unsigned(record: bytes, _: uuid.UUID) -> bytes:
    return record[:98] + bytes(64)


def signed_by_another_key(record: bytes, _: uuid.UUID) -> bytes:
    return record[:98] + DeviceKeys.generate().sign(GRANT_PURPOSE, record[:98])


def extended(record: bytes, _: uuid.UUID) -> bytes:
    until = int.from_bytes(record[89:97], "big") + 1000 * HOUR_MS
    return record[:89] + until.to_bytes(8, "big") + record[97:]


def other_supervisor(record: bytes, account: uuid.UUID) -> bytes:
    return record[:65] + account.bytes + record[81:]


FORGERIES: dict[str, Callable[[bytes, uuid.UUID], bytes]] = {
    "unsigned": unsigned,
    "wrong-signer": signed_by_another_key,
    "extended-dates": extended,
    "other-supervisor": other_supervisor,
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_grant_altered_in_the_delivery_stream_is_rejected_and_never_encrypted_to(
    pair: Pair, open_client: OpenClient, forgery: str
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    ivan = uuid.UUID(pair.server.create_account("ivan", "supervisor"))
    alter = FORGERIES[forgery]

    def policy(_index: int, frame: dict[str, Any]) -> list[dict[str, Any]]:
        if frame.get("kind") == "grant":
            record = base64.b64decode(frame["envelope"])
            frame = {**frame, "envelope": base64.b64encode(alter(record, ivan)).decode()}
        return [frame]

    relay = HostileRelay(pair.server.ws_url, policy)
    await relay.start()
    try:
        async with (
            open_client("carl", websocket_url=relay.ws_url) as carl,
            open_client("tess") as tess,
            open_client("sam") as sam,
        ):
            assert sam.account is not None
            grant = await tess.grant_supervisor(
                conversation, sam.account, until_ms=now_ms() + HOUR_MS
            )
            rejected = await expect(carl, GrantRejected)
            assert rejected.grant_id in (grant.id, None)
            assert carl.account is not None
            await carl.send(conversation, "not for the supervisor")
            assert not [e for e in await events_for(sam, 1.5) if isinstance(e, Message)]
    finally:
        await relay.stop()
    sam_device = sam_device_in(pair, "sam")
    assert all(sam_device not in wraps for wraps in stored_recipients(pair, "carl", conversation))


def _alter_listing(alter: Callable[[dict[str, Any]], None]) -> Callable[[str, str, Any], Any]:
    def rewrite(method: str, path: str, body: Any) -> Any:
        if method == "GET" and path.endswith("/grants") and isinstance(body, dict):
            for item in body.get("grants", []):
                alter(item)
        return body

    return rewrite


def _record_altered(
    change: Callable[[bytes, uuid.UUID], bytes],
) -> Callable[[dict[str, Any]], None]:
    def alter(item: dict[str, Any]) -> None:
        record = base64.b64decode(item["record"])
        item["record"] = base64.b64encode(change(record, uuid.uuid4())).decode()

    return alter


def _listing_extended(item: dict[str, Any]) -> None:
    item["until_ms"] += 1000 * HOUR_MS  # the signed record still says otherwise


LISTINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unsigned-record": _record_altered(unsigned),
    "record-extended": _record_altered(extended),
    "listing-extended": _listing_extended,
}


@pytest.mark.parametrize("forgery", sorted(LISTINGS))
async def test_grant_listing_altered_by_the_server_is_rejected_at_login(
    pair: Pair, open_client: OpenClient, forgery: str
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    relay = HttpRelay(pair.server.http_url, _alter_listing(LISTINGS[forgery]))
    await relay.start()
    try:
        async with open_client("tess") as tess, open_client("sam") as sam:
            assert sam.account is not None
            await tess.grant_supervisor(conversation, sam.account, until_ms=now_ms() + HOUR_MS)
            # carl's first login: the (altered) listing is the only way it hears of the grant
            async with open_client(
                "carl", url=relay.http_url, websocket_url=pair.server.ws_url
            ) as carl:
                seen = await events_for(carl, 1.0)
                assert [e for e in seen if isinstance(e, GrantRejected)]
                assert not [e for e in seen if isinstance(e, SupervisorGranted)]
                await carl.send(conversation, "not for the supervisor")
            assert not [e for e in await events_for(sam, 1.5) if isinstance(e, Message)]
    finally:
        await relay.stop()
    sam_device = sam_device_in(pair, "sam")
    assert all(sam_device not in wraps for wraps in stored_recipients(pair, "carl", conversation))


async def test_grant_state_survives_a_restart_of_the_supervisor_app(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    make_supervisor(pair)
    async with open_client("tess") as tess, open_client("carl") as carl:
        async with open_client("sam") as sam:
            assert sam.account is not None
            await tess.grant_supervisor(conversation, sam.account, until_ms=now_ms() + HOUR_MS)
            await expect(sam, SupervisorGranted)
            await expect(carl, SupervisorGranted)
        await carl.send(conversation, "while the supervisor's app was closed")
    async with open_client("sam") as sam:  # the grant event was consumed in the earlier run
        assert (await expect(sam, Message)).text == "while the supervisor's app was closed"
