"""This account's own devices: first registration, adding a device, revoking one.

The device holding the account identity key (AIK) signs every device list; a new list always
carries a higher version. Adding a device is a two-step exchange so its private keys never leave
it: the new device shows a `DeviceRequest` (its id and public keys), the managing device approves
it with `add_device` and shows back a `DeviceApproval` (the account id and its AIK), which the new
device pins before its first login. Both are short base64 strings, fit for copy-paste or a QR code.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from securemsg.client.errors import ClientError, DeviceRevoked
from securemsg.client.http import Api
from securemsg.client.keystore import KeystoreState, PeerRecord
from securemsg.crypto.devices import certify_device, sign_device_list, verify_device_list
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.keys import IdentityKey
from securemsg.protocol.devices import DeviceEntry, DeviceError, DevicePublicKeys, parse_device_list

_REQUEST = struct.Struct(">4sB16s32s32s")
_APPROVAL = struct.Struct(">4sB16s32s")

SaveFn = Callable[[], Awaitable[None]]  # makes the keystore durable


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A new device asking to be added: its id and public keys (no secret)."""

    device_id: uuid.UUID
    signing_key: bytes
    encryption_key: bytes

    def encode(self) -> str:
        raw = _REQUEST.pack(b"SMDR", 1, self.device_id.bytes, self.signing_key, self.encryption_key)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> DeviceRequest:
        magic, version, device, signing, encryption = _unpack(_REQUEST, text, "device request")
        if magic != b"SMDR" or version != 1:
            raise ClientError("not a securemsg device request")
        return cls(uuid.UUID(bytes=device), signing, encryption)


@dataclass(frozen=True, slots=True)
class DeviceApproval:
    """The managing device's answer: which account, and the identity key to pin for it."""

    account: uuid.UUID
    identity_key: bytes

    def encode(self) -> str:
        raw = _APPROVAL.pack(b"SMDA", 1, self.account.bytes, self.identity_key)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> DeviceApproval:
        magic, version, account, identity_key = _unpack(_APPROVAL, text, "device approval")
        if magic != b"SMDA" or version != 1:
            raise ClientError("not a securemsg device approval")
        return cls(uuid.UUID(bytes=account), identity_key)


async def register(state: KeystoreState, api: Api, *, save: SaveFn) -> None:
    """Make sure this device is on the account's published, AIK-signed device list.

    A new keystore gets an identity key (saved before anything is published, so a crash can't
    lose it) and publishes list version 1. Later runs check the published list instead.
    """
    assert state.account is not None
    published = await api.devices(state.account)
    if state.identity_public_key is None:
        if published.identity_key is not None:
            raise ClientError(
                "this account already has devices: create a DeviceRequest on this device and"
                " approve it with add_device on the device that manages the account"
            )
        state.identity = IdentityKey.generate()
        state.identity_public_key = state.identity.public_key
        state.peers[state.account] = PeerRecord(identity_key=state.identity_public_key)
        await save()
    own = state.peers.setdefault(state.account, PeerRecord(identity_key=state.identity_public_key))
    if published.identity_key is not None and published.identity_key != own.identity_key:
        raise ClientError("the server shows a different identity key for this account")
    if published.device_list is not None and published.device_list != own.device_list:
        try:
            listed = verify_device_list(
                published.device_list,
                own.identity_key,
                account_id=state.account.bytes,
                min_version=own.list_version,
                current=own.device_list,
            )
        except (InvalidSignature, DeviceError) as error:
            raise ClientError(
                f"the account's published device list is not valid: {error}"
            ) from None
        own.adopt(listed)
        await save()
    if own.device_list is not None and parse_device_list(own.device_list).entry(
        state.device_id.bytes
    ):
        return
    if state.identity is None:
        raise DeviceRevoked("this device is not on the account's device list (not approved yet?)")
    if own.list_version > 0:
        raise DeviceRevoked("this device was removed from the account's device list")
    entry = DeviceEntry(
        state.device_id.bytes, state.device_keys.signing_key, state.device_keys.encryption_key
    )
    await publish(state, api, [entry], new=[entry], save=save)


async def publish(
    state: KeystoreState,
    api: Api,
    entries: list[DeviceEntry],
    *,
    new: list[DeviceEntry],
    save: SaveFn,
) -> None:
    """Sign and publish a device list of `entries` (certifying the `new` ones), then trust it."""
    if state.identity is None or state.account is None:
        raise ClientError("only the device holding the account identity key can change devices")
    own = state.peers[state.account]
    now_ms = int(time.time() * 1000)
    certificates = [
        certify_device(
            state.identity,
            account_id=state.account.bytes,
            device_id=entry.device_id,
            device=DevicePublicKeys(entry.signing_key, entry.encryption_key),
            created_ms=now_ms,
        )
        for entry in new
    ]
    raw = sign_device_list(
        state.identity,
        account_id=state.account.bytes,
        list_version=own.list_version + 1,
        devices=entries,
        created_ms=now_ms,
    )
    await api.publish_devices(
        identity_key=state.identity.public_key, device_list=raw, certificates=certificates
    )
    own.adopt(parse_device_list(raw))
    await save()


def current_entries(state: KeystoreState) -> list[DeviceEntry]:
    assert state.account is not None
    own = state.peers.get(state.account)
    if own is None or own.device_list is None:
        return []
    return list(parse_device_list(own.device_list).entries)


def _unpack(layout: struct.Struct, text: str, what: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ClientError(f"{what} is not valid base64") from None
    if len(raw) != layout.size:
        raise ClientError(f"{what} of {len(raw)} bytes should be {layout.size}")
    return layout.unpack(raw)
