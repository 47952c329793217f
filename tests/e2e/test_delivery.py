"""Encrypted delivery through the real server process: live, after reconnect, and refusals."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from securemsg.protocol.envelope import EnvelopeLimits
from tests.support.db import snapshot
from tests.support.peer import Peer, pair
from tests.support.server import ServerProcess

MARKER = "PLAINTEXT-MARKER-3b1d0c"


def _files_containing(directory: Path, needle: bytes) -> list[str]:
    hits = []
    for path in directory.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path))
    return hits


async def test_message_arrives_live_intact_and_plaintext_is_stored_nowhere(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    await carl.connect()
    assert (await carl.next_of("caught_up"))["seq"] == 0
    envelope = tess.seal(
        conversation, {carl.device_id: carl.device.encryption_key}, f"hello {MARKER}"
    )
    accepted = await tess.send(envelope)
    assert accepted["type"] == "accepted", accepted
    deliver = await carl.next_of("deliver")
    assert deliver["seq"] == 1
    assert carl.open(deliver["envelope"], tess) == f"hello {MARKER}"
    await carl.ack(1)
    await tess.close()
    await carl.close()
    server.stop()
    assert _files_containing(server.data_dir, MARKER.encode()) == []


async def test_offline_recipient_gets_backlog_in_order_then_caught_up(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    texts = [f"message {i}" for i in range(20)]
    for text in texts:
        reply = await tess.send(
            tess.seal(conversation, {carl.device_id: carl.device.encryption_key}, text)
        )
        assert reply["type"] == "accepted"
    await carl.connect()
    got = []
    for expected_seq in range(1, 21):
        frame = await carl.next_of("deliver")
        assert frame["seq"] == expected_seq
        got.append(carl.open(frame["envelope"], tess))
    assert got == texts
    assert (await carl.next_of("caught_up"))["seq"] == 20
    # Acknowledge half, reconnect: only the unacknowledged half comes back.
    await carl.ack(10)
    await carl.close()
    await carl.connect()
    assert (await carl.next_of("deliver"))["seq"] == 11
    await carl.close()
    await tess.close()


async def test_retried_send_returns_same_accepted_and_stores_one_envelope(
    server: ServerProcess,
) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    envelope = tess.seal(conversation, {carl.device_id: carl.device.encryption_key}, "once")
    first = await tess.send(envelope)
    second = await tess.send(envelope)
    assert first == second and first["type"] == "accepted"
    tables = await snapshot(server.database_url)
    assert len(tables["envelopes"]) == 1 and len(tables["deliveries"]) == 1
    await tess.close()


async def test_send_on_a_stale_reused_message_id_is_refused(server: ServerProcess) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    message_id = os.urandom(16)
    recipients = {carl.device_id: carl.device.encryption_key}
    assert (await tess.send(tess.seal(conversation, recipients, "a", message_id=message_id)))[
        "type"
    ] == "accepted"
    reply = await tess.send(tess.seal(conversation, recipients, "b", message_id=message_id))
    assert reply["code"] == "duplicate_message"
    await tess.close()


REFUSALS = [
    "forged-device",
    "forged-account",
    "non-member",
    "stranger-wrap",
    "bad-signature",
    "truncated",
    "oversized",
    "clock-skew",
]


@pytest.mark.parametrize("case", REFUSALS)
async def test_invalid_send_gets_documented_error_and_stores_nothing(
    server: ServerProcess, case: str
) -> None:
    tess, carl, conversation = pair(server)
    server.create_account("olga", "client")
    olga = Peer(server, "olga").login()
    assert olga.register().status_code == 200
    await tess.connect()
    await olga.connect()
    before = await snapshot(server.database_url)
    to_carl = {carl.device_id: carl.device.encryption_key}
    sender, expected = tess, ""
    if case == "forged-device":
        envelope, expected = (
            tess.seal(conversation, to_carl, "x", sender_device=carl.device_id),
            "wrong_sender",
        )
    elif case == "forged-account":
        envelope, expected = (
            tess.seal(conversation, to_carl, "x", sender_account=carl.account_id),
            "wrong_sender",
        )
    elif case == "non-member":
        sender = olga
        envelope, expected = olga.seal(conversation, to_carl, "x"), "not_member"
    elif case == "stranger-wrap":
        envelope = tess.seal(
            conversation, {**to_carl, olga.device_id: olga.device.encryption_key}, "x"
        )
        expected = "bad_recipients"
    elif case == "bad-signature":
        raw = bytearray(tess.seal(conversation, to_carl, "x"))
        raw[-1] ^= 1
        envelope, expected = bytes(raw), "bad_signature"
    elif case == "truncated":
        envelope, expected = tess.seal(conversation, to_carl, "x")[:-10], "bad_envelope"
    elif case == "oversized":
        envelope, expected = (
            tess.seal(
                conversation,
                to_carl,
                "x" * 70_000,
                limits=EnvelopeLimits(max_envelope_bytes=1 << 20),
            ),
            "envelope_too_large",
        )
    else:
        envelope, expected = tess.seal(conversation, to_carl, "x", timestamp_ms=1), "clock_skew"
    reply = await sender.send(envelope)
    assert reply["type"] == "error" and reply["code"] == expected, reply
    assert await snapshot(server.database_url) == before
    # The connection and the server keep working.
    ok = await tess.send(tess.seal(conversation, to_carl, "still fine"))
    assert ok["type"] == "accepted"
    await tess.close()
    await olga.close()


async def test_new_socket_for_same_device_displaces_the_old_one(server: ServerProcess) -> None:
    _tess, carl, _ = pair(server)
    await carl.connect()
    old = carl.ws
    assert old is not None
    await carl.connect()
    from tests.support.ws import until_closed

    code, _ = await until_closed(old)
    assert code == 4409
    await carl.close()


async def test_sends_are_answered_in_order_while_many_are_in_flight(server: ServerProcess) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    to_carl = {carl.device_id: carl.device.encryption_key}
    ids = [os.urandom(16) for _ in range(100)]
    for message_id in ids:
        await tess.send_raw(tess.seal(conversation, to_carl, "burst", message_id=message_id))
    replies = [await tess.next_of("accepted", "error") for _ in ids]
    assert [r.get("message") for r in replies] == [m.hex() for m in ids]
    await carl.connect()
    seqs = [(await carl.next_of("deliver"))["seq"] for _ in ids]
    assert seqs == list(range(1, 101))
    await tess.close()
    await carl.close()


async def test_attach_with_another_accounts_device_is_refused(server: ServerProcess) -> None:
    _tess, carl, _ = pair(server)
    impostor = Peer(server, "tess", device=carl.device, device_id=carl.device_id).login()
    ready = await impostor.connect(attach=False)
    assert ready["type"] == "ready"
    import base64
    import json

    assert impostor.ws is not None
    await impostor.ws.send(
        json.dumps(
            {
                "type": "attach",
                "device": str(carl.device_id),
                "signature": base64.b64encode(b"\0" * 64).decode(),
            }
        )
    )
    error = await impostor.next_of("error")
    assert error["code"] == "bad_device"
    await impostor.close()
    assert uuid.UUID(str(carl.device_id))
