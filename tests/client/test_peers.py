"""Trust decisions on what the server publishes: pinning, verification, rollback, key changes."""

from __future__ import annotations

import uuid
from typing import cast

import pytest

from securemsg.client import (
    DeviceChanged,
    DeviceListRejected,
    IdentityChanged,
    PeerKeyChanged,
    PeerUnavailable,
)
from securemsg.client.events import Event
from securemsg.client.http import Api, PublishedDevices
from securemsg.client.keystore import KeystoreState
from securemsg.client.peers import Peers
from securemsg.crypto.devices import sign_device_list
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.protocol.devices import DeviceEntry

PEER = uuid.UUID("00000000-0000-4000-8000-0000000000b0")
AIK = IdentityKey.from_seed(b"\x01" * 32)
PHONE, LAPTOP = b"\x0a" * 16, b"\x0b" * 16
KEYS = {PHONE: DeviceKeys.from_seed(b"\x02" * 32), LAPTOP: DeviceKeys.from_seed(b"\x03" * 32)}


def _list(
    version: int, devices: list[bytes], *, signer: IdentityKey = AIK, created_ms: int = 1000
) -> bytes:
    return sign_device_list(
        signer,
        account_id=PEER.bytes,
        list_version=version,
        devices=[DeviceEntry(d, KEYS[d].signing_key, KEYS[d].encryption_key) for d in devices],
        created_ms=created_ms,
    )


@pytest.fixture
def peers() -> tuple[Peers, list[Event]]:
    state = KeystoreState(
        device_id=uuid.uuid4(), device_keys=DeviceKeys.generate(), account=uuid.uuid4()
    )
    seen: list[Event] = []
    return Peers(
        state, cast(Api, None), refresh_seconds=60, notify=seen.append, on_change=lambda: None
    ), seen


def _publish(peers: Peers, raw: bytes, identity: bytes = AIK.public_key) -> None:
    peers.apply(PublishedDevices(PEER, identity, raw))


def test_first_list_is_pinned_and_used(peers: tuple[Peers, list[Event]]) -> None:
    trust, seen = peers
    _publish(trust, _list(1, [PHONE]))
    assert set(trust.devices(PEER)) == {PHONE}
    trust.check_sendable(PEER)
    assert seen == []


def test_newer_list_is_adopted_and_reported(peers: tuple[Peers, list[Event]]) -> None:
    trust, seen = peers
    _publish(trust, _list(1, [PHONE]))
    _publish(trust, _list(2, [PHONE, LAPTOP]))
    assert set(trust.devices(PEER)) == {PHONE, LAPTOP}
    assert seen == [DeviceChanged(PEER, 2, added=(uuid.UUID(bytes=LAPTOP),), removed=())]


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (_list(1, [PHONE, LAPTOP]), "differs from the trusted list"),  # same version, other list
        (_list(3, [PHONE, LAPTOP], signer=IdentityKey.from_seed(b"\x09" * 32)), "not signed"),
    ],
    ids=["fork", "forged"],
)
def test_forked_or_forged_list_is_rejected_and_the_trusted_one_kept(
    peers: tuple[Peers, list[Event]], second: bytes, reason: str
) -> None:
    trust, seen = peers
    _publish(trust, _list(1, [PHONE]))
    _publish(trust, second)
    assert set(trust.devices(PEER)) == {PHONE}
    assert len(seen) == 1 and isinstance(seen[0], DeviceListRejected) and reason in seen[0].reason


def test_older_list_is_a_rollback(peers: tuple[Peers, list[Event]]) -> None:
    trust, seen = peers
    _publish(trust, _list(2, [PHONE]))
    _publish(trust, _list(1, [PHONE, LAPTOP]))
    assert set(trust.devices(PEER)) == {PHONE}
    assert isinstance(seen[0], DeviceListRejected) and "older" in seen[0].reason


def test_revoked_device_verifies_only_messages_dated_before_its_revocation(
    peers: tuple[Peers, list[Event]],
) -> None:
    trust, _ = peers
    _publish(trust, _list(1, [PHONE, LAPTOP]))
    _publish(trust, _list(2, [LAPTOP], created_ms=5000))
    assert trust.signing_key(PEER, PHONE, sent_ms=4999) == KEYS[PHONE].signing_key
    assert trust.signing_key(PEER, PHONE, sent_ms=5000) is None
    assert trust.signing_key(PEER, LAPTOP, sent_ms=9999) == KEYS[LAPTOP].signing_key


def test_new_identity_key_is_pending_until_accepted(peers: tuple[Peers, list[Event]]) -> None:
    trust, seen = peers
    _publish(trust, _list(1, [PHONE]))
    other = IdentityKey.from_seed(b"\x07" * 32)
    _publish(trust, _list(1, [LAPTOP], signer=other), identity=other.public_key)
    assert seen == [IdentityChanged(PEER, verified=False)]
    with pytest.raises(PeerKeyChanged):
        trust.check_sendable(PEER)
    assert trust.signing_key(PEER, PHONE, sent_ms=0) is None
    trust.accept_pending(PEER, verified=False)
    with pytest.raises(PeerUnavailable):
        trust.check_sendable(PEER)  # nothing trusted under the new key until it is fetched again
    _publish(trust, _list(1, [LAPTOP], signer=other), identity=other.public_key)
    assert set(trust.devices(PEER)) == {LAPTOP}
