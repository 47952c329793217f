"""A reader the server adds on its own is never encrypted to.

These tests play a malicious server by writing to its database directly: a device row with a
certificate from the wrong key, a device list the account's identity key did not sign, and a
whole new identity key. Each time the SDK either ignores the addition or refuses to send, and
the envelopes the server stored carry no wrap for the intruder.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import select, update

from securemsg.client import (
    Client,
    DeviceListRejected,
    IdentityChanged,
    PeerKeyChanged,
    VerificationFailed,
)
from securemsg.crypto.devices import certify_device, sign_device_list
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.protocol.devices import DeviceEntry, parse_device_list
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from securemsg.storage.database import Database
from securemsg.storage.devices import DeviceStore
from securemsg.storage.models import accounts, envelopes
from tests.client.conftest import OpenClient, Pair

INTRUDER = uuid.UUID("0badc0de-0000-4000-8000-000000000001")
INTRUDER_KEYS = DeviceKeys.from_seed(b"\x66" * 32)


async def _account(pair: Pair, username: str) -> tuple[uuid.UUID, bytes, bytes]:
    database = Database.open(pair.server.database_url)
    try:
        async with database.read() as conn:
            row = (
                await conn.execute(
                    select(accounts.c.id, accounts.c.identity_key, accounts.c.device_list).where(
                        accounts.c.username == username
                    )
                )
            ).one()
        return row[0], row[1], row[2]
    finally:
        await database.close()


async def _tamper(
    pair: Pair,
    account: uuid.UUID,
    *,
    identity_key: bytes | None = None,
    device_list: bytes | None = None,
    add_device: IdentityKey | None = None,
) -> None:
    """Do what a malicious server could: add a device row, swap the list or the identity key."""
    database = Database.open(pair.server.database_url)
    now_ms = int(time.time() * 1000)
    try:
        async with database.write() as conn:
            if add_device is not None:
                await DeviceStore(conn).add(
                    device_id=INTRUDER,
                    account_id=account,
                    signing_key=INTRUDER_KEYS.signing_key,
                    encryption_key=INTRUDER_KEYS.encryption_key,
                    certificate=certify_device(
                        add_device,
                        account_id=account.bytes,
                        device_id=INTRUDER.bytes,
                        device=INTRUDER_KEYS.public_keys,
                        created_ms=now_ms,
                    ),
                    now_ms=now_ms,
                )
            values: dict[str, object] = {}
            if identity_key is not None:
                values["identity_key"] = identity_key
            if device_list is not None:
                values["device_list"] = device_list
                values["device_list_version"] = parse_device_list(device_list).list_version
            if values:
                await conn.execute(
                    update(accounts).where(accounts.c.id == account).values(**values)
                )
    finally:
        await database.close()


def _forged_list(account: uuid.UUID, current: bytes, signer: IdentityKey) -> bytes:
    listed = parse_device_list(current)
    intruder = DeviceEntry(INTRUDER.bytes, INTRUDER_KEYS.signing_key, INTRUDER_KEYS.encryption_key)
    return sign_device_list(
        signer,
        account_id=account.bytes,
        list_version=listed.list_version + 1,
        devices=[*listed.entries, intruder],
        created_ms=int(time.time() * 1000),
    )


async def _stored_recipients(pair: Pair) -> list[set[uuid.UUID]]:
    database = Database.open(pair.server.database_url)
    try:
        async with database.read() as conn:
            rows = (await conn.execute(select(envelopes.c.data).order_by(envelopes.c.id))).all()
    finally:
        await database.close()
    return [
        {uuid.UUID(bytes=d) for d in parse_envelope(row[0], EnvelopeLimits()).recipient_devices}
        for row in rows
    ]


async def _drain(client: Client) -> list[object]:
    seen: list[object] = []
    while True:
        try:
            async with asyncio.timeout(0.3):
                seen.append(await client.next_event())
        except TimeoutError:
            return seen


async def test_device_row_without_a_list_entry_is_never_a_recipient(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess") as tess:
        tess_device = tess.device_id
    tess_id, _, _ = await _account(pair, "tess")
    await _tamper(pair, tess_id, add_device=IdentityKey.generate())
    async with open_client("carl", device_refresh_seconds=0) as carl:
        await carl.send(conversation, "for tess only")
        assert [d.id for d in carl.devices(tess_id)] == [tess_device]
        carl_device = carl.device_id  # a sender wraps to itself too (never delivered back)
    assert await _stored_recipients(pair) == [{tess_device, carl_device}]


async def test_device_list_not_signed_by_the_pinned_identity_key_is_rejected(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess") as tess:
        tess_device = tess.device_id
    async with open_client("carl", device_refresh_seconds=0) as carl:
        await carl.send(conversation, "before")  # pins tess's identity key and list
        tess_id, _, current = await _account(pair, "tess")
        forger = IdentityKey.generate()
        await _tamper(
            pair, tess_id, device_list=_forged_list(tess_id, current, forger), add_device=forger
        )
        await carl.send(conversation, "after")
        rejected = [e for e in await _drain(carl) if isinstance(e, DeviceListRejected)]
        assert rejected and rejected[0].account == tess_id
        assert "not signed" in rejected[0].reason
        carl_device = carl.device_id  # a sender wraps to itself too (never delivered back)
    assert await _stored_recipients(pair) == [{tess_device, carl_device}] * 2


async def test_new_identity_key_blocks_sends_until_accepted(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"):
        pass
    async with open_client("carl", device_refresh_seconds=0) as carl:
        await carl.send(conversation, "before")
        tess_id, _, current = await _account(pair, "tess")
        number_before = carl.safety_number(tess_id)
        impostor = IdentityKey.generate()
        await _tamper(
            pair,
            tess_id,
            identity_key=impostor.public_key,
            device_list=_forged_list(tess_id, current, impostor),
            add_device=impostor,
        )
        try:
            await carl.send(conversation, "after")
        except PeerKeyChanged as error:
            assert error.account == tess_id and not error.verified
        else:
            raise AssertionError("sent to a peer whose identity key changed")
        assert any(isinstance(e, IdentityChanged) for e in await _drain(carl))
        # The safety number now covers the new key: comparing it is how a person would notice.
        assert carl.safety_number(tess_id) != number_before
        await carl.accept_identity_change(tess_id)  # the user decided to trust the new key
        await carl.send(conversation, "to the new key")
    assert len(await _stored_recipients(pair)) == 2


async def test_verified_peer_with_a_new_identity_key_needs_verification_again_then_sends_resume(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess") as tess:
        tess_id = tess.account
    assert tess_id is not None
    async with open_client("carl", device_refresh_seconds=0) as carl:
        async with open_client("tess") as tess:
            assert carl.account is not None
            await tess.refresh_devices(carl.account)
            await carl.verify_peer(tess_id, scanned=tess.safety_number(carl.account).qr_payload)
        assert carl.is_verified(tess_id)
        _, _, current = await _account(pair, "tess")
        impostor = IdentityKey.generate()
        await _tamper(
            pair,
            tess_id,
            identity_key=impostor.public_key,
            device_list=_forged_list(tess_id, current, impostor),
            add_device=impostor,
        )
        try:
            await carl.send(conversation, "after")
        except PeerKeyChanged as error:
            assert error.verified
        else:
            raise AssertionError("sent to a verified peer whose identity key changed")
        try:
            await carl.accept_identity_change(tess_id)
        except PeerKeyChanged:
            pass
        else:
            raise AssertionError("a verified peer's new key was accepted without verification")
        try:
            await carl.verify_peer(tess_id, scanned=b"\x01" + bytes(64))
        except VerificationFailed:
            pass
        else:
            raise AssertionError("a wrong scanned safety number verified the peer")
        assert not carl.is_verified(tess_id)
    assert await _stored_recipients(pair) == []
    # Compared in person this time (the number tess's screen shows for her new key): verified
    # again, and sends resume, to the devices that key signed.
    async with open_client("carl", device_refresh_seconds=0) as carl:
        await carl.verify_peer(tess_id, scanned=carl.safety_number(tess_id).qr_payload)
        assert carl.is_verified(tess_id)
        await carl.send(conversation, "after comparing again")
    ((*recipients,),) = await _stored_recipients(pair)
    assert INTRUDER in recipients
