"""Byte layouts of supervisor grants, client consents and key shares, parsed without keys.

A grant is signed by the therapist's device; nothing the server can produce makes a supervisor a
reader. `securemsg.crypto.grants` signs and verifies; this module only encodes and parses, and
raises `GrantError` (code BAD_GRANT) for anything malformed.

    grant (162 bytes)                    consent (97 bytes)       key share (209 bytes)
    0   1  version = 1                    0  1  version = 1        0   1  version = 1
    1   16 grant_id                       1  16 client_account     1   16 grant_id
    17  16 conversation_id                17 16 client_device      17  16 therapist_device
    33  16 therapist_account              33 64 client device      33  16 message_id
    49  16 therapist_device                     signature over     49  16 supervisor_device
    65  16 supervisor_account                   grant || 0..33     65  80 content key sealed
    81  8  from_ms   u64                                                  to that device
    89  8  until_ms  u64                                           145 64 therapist device
    97  1  flags: bit 0 include history                                   signature
    98  64 therapist device signature

All integers are big-endian; each signature covers every preceding byte of its own record, with
a purpose prefix (docs/confidentiality.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from securemsg.protocol.errors import ErrorCode, ProtocolError

VERSION = 1
SIGNATURE_BYTES = 64
WRAPPED_KEY_BYTES = 80
INCLUDE_HISTORY = 0x01

_GRANT = struct.Struct(">B16s16s16s16s16sQQB")
_CONSENT = struct.Struct(">B16s16s")
_KEY_SHARE = struct.Struct(">B16s16s16s16s80s")
GRANT_BYTES = _GRANT.size + SIGNATURE_BYTES
CONSENT_BYTES = _CONSENT.size + SIGNATURE_BYTES
KEY_SHARE_BYTES = _KEY_SHARE.size + SIGNATURE_BYTES


class GrantError(ProtocolError):
    """A grant, consent or key share is malformed."""

    code = ErrorCode.BAD_GRANT


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: bytes
    conversation_id: bytes
    therapist_account: bytes
    therapist_device: bytes
    supervisor_account: bytes
    from_ms: int
    until_ms: int
    include_history: bool
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def signed_part(self) -> bytes:
        return self.raw[: _GRANT.size]

    def active_at(self, now_ms: int) -> bool:
        return self.from_ms <= now_ms < self.until_ms


@dataclass(frozen=True, slots=True)
class Consent:
    client_account: bytes
    client_device: bytes
    signature: bytes
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyShare:
    grant_id: bytes
    therapist_device: bytes
    message_id: bytes
    supervisor_device: bytes
    wrapped_key: bytes
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def signed_part(self) -> bytes:
        return self.raw[: _KEY_SHARE.size]


def encode_grant_body(
    *,
    grant_id: bytes,
    conversation_id: bytes,
    therapist_account: bytes,
    therapist_device: bytes,
    supervisor_account: bytes,
    from_ms: int,
    until_ms: int,
    include_history: bool,
) -> bytes:
    if not 0 <= from_ms < until_ms < 2**64:
        raise ValueError("a grant needs 0 <= from_ms < until_ms")
    flags = INCLUDE_HISTORY if include_history else 0
    return _GRANT.pack(
        VERSION,
        grant_id,
        conversation_id,
        therapist_account,
        therapist_device,
        supervisor_account,
        from_ms,
        until_ms,
        flags,
    )


def parse_grant(data: bytes) -> Grant:
    _check(data, GRANT_BYTES, "grant")
    (_v, grant_id, conversation, therapist, device, supervisor, from_ms, until_ms, flags) = (
        _GRANT.unpack_from(data)
    )
    if flags & ~INCLUDE_HISTORY:
        raise GrantError(f"grant has unknown flags {flags:#04x}")
    if not from_ms < until_ms:
        raise GrantError("grant ends before it starts")
    return Grant(
        grant_id,
        conversation,
        therapist,
        device,
        supervisor,
        from_ms,
        until_ms,
        bool(flags & INCLUDE_HISTORY),
        data[_GRANT.size :],
        bytes(data),
    )


def encode_consent_body(*, client_account: bytes, client_device: bytes) -> bytes:
    return _CONSENT.pack(VERSION, client_account, client_device)


def parse_consent(data: bytes) -> Consent:
    _check(data, CONSENT_BYTES, "consent")
    _v, account, device = _CONSENT.unpack_from(data)
    return Consent(account, device, data[_CONSENT.size :], bytes(data))


def encode_key_share_body(
    *,
    grant_id: bytes,
    therapist_device: bytes,
    message_id: bytes,
    supervisor_device: bytes,
    wrapped_key: bytes,
) -> bytes:
    return _KEY_SHARE.pack(
        VERSION, grant_id, therapist_device, message_id, supervisor_device, wrapped_key
    )


def parse_key_share(data: bytes) -> KeyShare:
    _check(data, KEY_SHARE_BYTES, "key share")
    _v, grant_id, therapist_device, message_id, device, wrapped = _KEY_SHARE.unpack_from(data)
    return KeyShare(
        grant_id,
        therapist_device,
        message_id,
        device,
        wrapped,
        data[_KEY_SHARE.size :],
        bytes(data),
    )


def _check(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise GrantError(f"{what} of {len(data)} bytes; version 1 is {size} bytes")
    if data[0] != VERSION:
        raise GrantError(f"{what} version {data[0]} is not supported")
