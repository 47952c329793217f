"""Supervisor grants through the real server: signed by the therapist, visible, bounded, audited."""

from __future__ import annotations

import base64
import os
import time
import uuid

import httpx
import pytest
from sqlalchemy import select

from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.grants import (
    open_shared,
    sign_grant,
    verify_grant,
)
from securemsg.protocol.grants import parse_key_share
from securemsg.storage.database import Database
from securemsg.storage.models import audit_events
from tests.audit.tamper import dialect_of, execute, fail_audit_inserts_sql
from tests.support.grants import HOUR_MS, grant_record, key_share, now_ms, post_grant, supervisor
from tests.support.peer import pair
from tests.support.server import ServerProcess


async def audit_rows(server: ServerProcess, action: str) -> list[tuple[str, str]]:
    database = Database.open(server.database_url)
    try:
        async with database.read() as conn:
            rows = await conn.execute(
                select(audit_events.c.action, audit_events.c.outcome).where(
                    audit_events.c.action == action
                )
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await database.close()


async def test_granted_supervisor_reads_live_every_participant_sees_the_grant_and_reads_are_audited(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    await carl.connect()
    await sam.connect()
    record = grant_record(tess, sam, conversation)
    response = post_grant(tess, conversation, record)
    assert response.status_code == 201, response.text
    event = await carl.next_of("deliver")
    assert event["kind"] == "grant"
    # The client's device checks the grant against the therapist's device key itself.
    grant = verify_grant(base64.b64decode(event["envelope"]), tess.device.signing_key)
    assert grant.supervisor_account == sam.account_id.bytes  # type: ignore[union-attr]
    await tess.connect()
    to_both = {carl.device_id: carl.device.encryption_key, sam.device_id: sam.device.encryption_key}
    assert (await tess.send(tess.seal(conversation, to_both, "for supervision")))[
        "type"
    ] == "accepted"
    frame = await sam.next_of("deliver")
    while frame.get("kind") == "grant":
        frame = await sam.next_of("deliver")
    assert sam.open(frame["envelope"], tess) == "for supervision"
    assert ("supervisor.read", "success") in await audit_rows(server, "supervisor.read")
    assert await audit_rows(server, "supervisor.grant") == [("supervisor.grant", "success")]
    for peer in (tess, carl, sam):
        await peer.close()


@pytest.mark.parametrize("case", ["never", "revoked", "expired", "other-conversation"])
async def test_supervisor_without_a_grant_in_force_gets_nothing_and_is_audited_as_denied(
    server: ServerProcess, case: str
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    if case == "revoked":
        record = grant_record(tess, sam, conversation)
        grant_id = post_grant(tess, conversation, record).json()["id"]
        r = httpx.post(
            f"{server.http_url}/v1/grants/{grant_id}/revoke", headers=carl.auth, timeout=10
        )
        assert r.status_code == 200 and r.json()["active"] is False
    elif case == "expired":
        record = grant_record(
            tess, sam, conversation, from_ms=now_ms() - 2 * HOUR_MS, until_ms=now_ms() + 1500
        )
        assert post_grant(tess, conversation, record).status_code == 201
        time.sleep(1.6)
    elif case == "other-conversation":
        server.create_account("cleo", "client")
        other = uuid.UUID(server.create_conversation("tess", "cleo"))
        assert post_grant(tess, other, grant_record(tess, sam, other)).status_code == 201
    await tess.connect()
    to_sam = {carl.device_id: carl.device.encryption_key, sam.device_id: sam.device.encryption_key}
    reply = await tess.send(tess.seal(conversation, to_sam, "private"))
    assert reply["code"] == "bad_recipients"
    history = httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}/history", headers=sam.auth, timeout=10
    )
    assert history.status_code == 403 and history.json()["error"]["code"] == "no_grant"
    assert ("supervisor.history", "denied") in await audit_rows(server, "supervisor.history")
    await tess.close()


async def test_deliveries_queued_for_a_supervisor_are_withheld_once_the_grant_ends(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    grant_id = post_grant(tess, conversation, grant_record(tess, sam, conversation)).json()["id"]
    await tess.connect()
    to_both = {carl.device_id: carl.device.encryption_key, sam.device_id: sam.device.encryption_key}
    assert (await tess.send(tess.seal(conversation, to_both, "queued while granted")))[
        "type"
    ] == "accepted"
    assert (
        httpx.post(f"{server.http_url}/v1/grants/{grant_id}/revoke", headers=tess.auth).status_code
        == 200
    )
    await sam.connect()
    kinds = []
    while True:
        frame = await sam.next_of("deliver", "caught_up")
        if frame["type"] == "caught_up":
            break
        kinds.append(frame.get("kind", "message"))
    assert kinds == ["grant", "grant_ended"]  # the message itself never reaches the supervisor
    assert ("supervisor.read", "denied") in await audit_rows(server, "supervisor.read")
    await tess.close()
    await sam.close()


@pytest.mark.parametrize(
    "case", ["other-device", "extended", "other-conversation", "not-a-supervisor"]
)
def test_grant_not_signed_as_issued_by_the_therapist_is_refused(
    server: ServerProcess, case: str
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    if case == "other-device":
        record = grant_record(carl, sam, conversation)  # signed by the client's device
    elif case == "extended":
        raw = bytearray(grant_record(tess, sam, conversation))
        raw[89:97] = (now_ms() + 1000 * HOUR_MS).to_bytes(8, "big")  # until_ms pushed out
        record = bytes(raw)
    elif case == "other-conversation":
        record = grant_record(tess, sam, uuid.uuid4())
    else:
        record = grant_record(tess, carl, conversation)
    response = post_grant(tess, conversation, record)
    assert response.status_code in (400, 403), response.text
    assert httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}/grants", headers=carl.auth
    ).json() == {"grants": []}


def test_participants_detect_a_grant_altered_after_signing() -> None:
    from securemsg.crypto.keys import DeviceKeys

    therapist = DeviceKeys.generate()
    record = bytearray(
        sign_grant(
            therapist,
            grant_id=os.urandom(16),
            conversation_id=os.urandom(16),
            therapist_account=os.urandom(16),
            therapist_device=os.urandom(16),
            supervisor_account=os.urandom(16),
            from_ms=1,
            until_ms=2,
            include_history=False,
        )
    )
    record[90] ^= 0x01
    with pytest.raises(InvalidSignature):
        verify_grant(bytes(record), therapist.signing_key)


async def test_history_reaches_a_supervisor_only_through_therapist_signed_key_shares(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    await carl.connect()
    to_tess = {tess.device_id: tess.device.encryption_key}
    sent = await carl.send(carl.seal(conversation, to_tess, "before the grant"))
    assert sent["type"] == "accepted"
    grant_id = uuid.UUID(
        post_grant(tess, conversation, grant_record(tess, sam, conversation)).json()["id"]
    )
    history = httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}/history", headers=tess.auth
    ).json()["items"]
    message = next(i for i in history if i["kind"] == "message")
    r = httpx.post(
        f"{server.http_url}/v1/grants/{grant_id}/key-shares",
        headers=tess.auth,
        json={"shares": [key_share(tess, sam, grant_id, message)]},
    )
    assert r.status_code == 200 and r.json() == {"stored": 1}
    seen = httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}/history", headers=sam.auth
    ).json()["items"]
    shares = httpx.get(
        f"{server.http_url}/v1/grants/{grant_id}/key-shares",
        headers=sam.auth,
        params={"device": str(sam.device_id)},
    ).json()["shares"]
    opened = open_shared(
        base64.b64decode(next(i for i in seen if i["kind"] == "message")["envelope"]),
        parse_key_share(base64.b64decode(shares[0])),
        supervisor=sam.device,
        sender_signing_key=carl.device.signing_key,
    )
    assert opened.plaintext == b"before the grant"
    assert ("supervisor.history", "success") in await audit_rows(server, "supervisor.history")
    assert ("supervisor.key_shares", "success") in await audit_rows(server, "supervisor.key_shares")
    await carl.close()


async def test_supervisor_read_returns_nothing_when_its_audit_write_fails(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    sam = supervisor(server)
    post_grant(tess, conversation, grant_record(tess, sam, conversation))
    await tess.connect()
    to_both = {carl.device_id: carl.device.encryption_key, sam.device_id: sam.device.encryption_key}
    assert (await tess.send(tess.seal(conversation, to_both, "audited or nothing")))[
        "type"
    ] == "accepted"
    await execute(server.database_url, *fail_audit_inserts_sql(dialect_of(server.database_url)))
    history = httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}/history", headers=sam.auth
    )
    assert history.status_code == 503
    assert "envelope" not in history.text
    await sam.connect()
    with pytest.raises(TimeoutError):
        while True:  # grant notices may arrive; a message must not
            frame = await sam.next_of("deliver", timeout=2)
            assert frame.get("kind") in ("grant", "grant_ended"), frame
    await sam.close()
    await tess.close()
