"""Byte layouts of device certificates and device lists, parsed and checked without keys.

An account's identity key (AIK) signs both; `securemsg.crypto.devices` signs and verifies, this
module only encodes and parses. Parsers raise `DeviceError` (code BAD_DEVICE) and nothing else.

    device certificate (169 bytes)          device list (99 + 80 * n bytes)
    0    1   version = 1                    0    1   version = 1
    1    16  account_id                     1    16  account_id
    17   16  device_id                      17   8   list_version  u64, >= 1
    33   32  signing_key   (Ed25519)        25   8   created_ms    u64
    65   32  encryption_key (X25519)        33   2   device_count  u16, 0..limits.max_devices
    97   8   created_ms    u64              35   80n entries, strictly ascending by device_id:
    105  64  AIK signature                           device_id 16, signing_key 32, encryption_key 32
                                            ..   64  AIK signature

All integers are big-endian; each signature covers every preceding byte (see docs/envelope.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from securemsg.protocol.errors import ErrorCode, ProtocolError

VERSION = 1
ID_BYTES = 16
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

_CERTIFICATE = struct.Struct(">B16s16s32s32sQ")
_LIST_PREFIX = struct.Struct(">B16sQQH")
_ENTRY = struct.Struct(">16s32s32s")
CERTIFICATE_BYTES = _CERTIFICATE.size + SIGNATURE_BYTES
ENTRY_BYTES = _ENTRY.size


class DeviceError(ProtocolError):
    """A device certificate or device list is malformed."""

    code = ErrorCode.BAD_DEVICE


class StaleDeviceList(DeviceError):
    """A correctly signed device list is older than (or differs at) the version already trusted."""

    code = ErrorCode.STALE_DEVICE_LIST


@dataclass(frozen=True, slots=True)
class DeviceListLimits:
    max_devices: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.max_devices <= 0xFFFF:
            raise ValueError(f"max_devices={self.max_devices} is outside 1..65535")


@dataclass(frozen=True, slots=True)
class DevicePublicKeys:
    signing_key: bytes  # Ed25519
    encryption_key: bytes  # X25519


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    device_id: bytes
    signing_key: bytes
    encryption_key: bytes

    @property
    def public_keys(self) -> DevicePublicKeys:
        return DevicePublicKeys(self.signing_key, self.encryption_key)


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A structurally valid certificate; authentic only once `verify_device_certificate` passed."""

    version: int
    account_id: bytes
    device_id: bytes
    signing_key: bytes
    encryption_key: bytes
    created_ms: int
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def signed_part(self) -> bytes:
        return self.raw[:-SIGNATURE_BYTES]

    @property
    def public_keys(self) -> DevicePublicKeys:
        return DevicePublicKeys(self.signing_key, self.encryption_key)


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A structurally valid device list; authentic only once `verify_device_list` passed."""

    version: int
    account_id: bytes
    list_version: int
    created_ms: int
    entries: tuple[DeviceEntry, ...]
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def signed_part(self) -> bytes:
        return self.raw[:-SIGNATURE_BYTES]

    @property
    def device_ids(self) -> tuple[bytes, ...]:
        return tuple(entry.device_id for entry in self.entries)

    @property
    def encryption_keys(self) -> dict[bytes, bytes]:
        """device_id -> X25519 public key: the recipients mapping `seal_envelope` takes."""
        return {entry.device_id: entry.encryption_key for entry in self.entries}

    def entry(self, device_id: bytes) -> DeviceEntry | None:
        for entry in self.entries:
            if entry.device_id == device_id:
                return entry
        return None


def encode_certificate_body(
    *, account_id: bytes, device_id: bytes, keys: DevicePublicKeys, created_ms: int
) -> bytes:
    """Every certificate byte before the signature. Raise `ValueError` for a malformed field."""
    _check_ids(account_id=account_id, device_id=device_id)
    _check_keys(keys.signing_key, keys.encryption_key)
    _check_u64("created_ms", created_ms)
    return _CERTIFICATE.pack(
        VERSION, account_id, device_id, keys.signing_key, keys.encryption_key, created_ms
    )


def parse_device_certificate(data: bytes) -> DeviceCertificate:
    raw = bytes(data)
    _check_version(raw, "device certificate")
    if len(raw) != CERTIFICATE_BYTES:
        raise DeviceError(
            f"device certificate of {len(raw)} bytes should be {CERTIFICATE_BYTES} bytes"
        )
    version, account_id, device_id, signing_key, encryption_key, created_ms = (
        _CERTIFICATE.unpack_from(raw)
    )
    return DeviceCertificate(
        version=version,
        account_id=account_id,
        device_id=device_id,
        signing_key=signing_key,
        encryption_key=encryption_key,
        created_ms=created_ms,
        signature=raw[-SIGNATURE_BYTES:],
        raw=raw,
    )


def encode_device_list_body(
    *,
    account_id: bytes,
    list_version: int,
    created_ms: int,
    entries: Iterable[DeviceEntry],
    limits: DeviceListLimits | None = None,
) -> bytes:
    """Every device list byte before the signature, entries sorted by device id.

    Raise `ValueError` for a malformed field, a duplicate device or too many devices.
    """
    limits = limits or DeviceListLimits()
    _check_ids(account_id=account_id)
    _check_u64("list_version", list_version)
    if list_version < 1:
        raise ValueError("list_version must be at least 1")
    _check_u64("created_ms", created_ms)
    ordered = sorted(entries, key=lambda entry: entry.device_id)
    if len(ordered) > limits.max_devices:
        raise ValueError(f"{len(ordered)} devices exceed the limit of {limits.max_devices}")
    parts = [_LIST_PREFIX.pack(VERSION, account_id, list_version, created_ms, len(ordered))]
    previous = b""
    for entry in ordered:
        _check_ids(device_id=entry.device_id)
        _check_keys(entry.signing_key, entry.encryption_key)
        if entry.device_id == previous:
            raise ValueError(f"device {entry.device_id.hex()} is listed twice")
        previous = entry.device_id
        parts.append(_ENTRY.pack(entry.device_id, entry.signing_key, entry.encryption_key))
    return b"".join(parts)


def parse_device_list(data: bytes, limits: DeviceListLimits | None = None) -> DeviceList:
    limits = limits or DeviceListLimits()
    raw = bytes(data)
    max_bytes = _LIST_PREFIX.size + ENTRY_BYTES * limits.max_devices + SIGNATURE_BYTES
    if len(raw) > max_bytes:
        raise DeviceError(f"device list of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    _check_version(raw, "device list")
    if len(raw) < _LIST_PREFIX.size:
        raise DeviceError(f"device list of {len(raw)} bytes is truncated")
    version, account_id, list_version, created_ms, count = _LIST_PREFIX.unpack_from(raw)
    if count > limits.max_devices:
        raise DeviceError(f"device list has {count} devices; the limit is {limits.max_devices}")
    if list_version < 1:
        raise DeviceError("device list version 0 is not allowed; versions start at 1")
    expected = _LIST_PREFIX.size + ENTRY_BYTES * count + SIGNATURE_BYTES
    if len(raw) != expected:
        raise DeviceError(
            f"device list of {len(raw)} bytes with {count} devices should be {expected} bytes"
        )
    entries = tuple(
        DeviceEntry(*_ENTRY.unpack_from(raw, at))
        for at in range(_LIST_PREFIX.size, expected - SIGNATURE_BYTES, ENTRY_BYTES)
    )
    ids = [entry.device_id for entry in entries]
    if any(a >= b for a, b in pairwise(ids)):
        raise DeviceError("device list entries are not in strictly ascending device id order")
    return DeviceList(
        version=version,
        account_id=account_id,
        list_version=list_version,
        created_ms=created_ms,
        entries=entries,
        signature=raw[-SIGNATURE_BYTES:],
        raw=raw,
    )


def check_not_rollback(device_list: DeviceList, *, min_version: int, current: bytes | None) -> None:
    """Accept a list newer than `min_version`, or exactly the list already trusted at it.

    `current` is the raw list the caller trusts at `min_version` (None on first contact, where
    `min_version` is 0). Anything older, or a different list with the same version, is a
    rollback or a fork by whoever serves the lists: raise `StaleDeviceList`.
    """
    version = device_list.list_version
    if version > min_version:
        return
    if version < min_version:
        raise StaleDeviceList(
            f"device list version {version} is older than the trusted version {min_version}"
        )
    if current is None or device_list.raw != current:
        raise StaleDeviceList(
            f"device list version {version} differs from the trusted list of that version"
        )


def _check_version(raw: bytes, what: str) -> None:
    if not raw:
        raise DeviceError(f"{what} is empty")
    if raw[0] != VERSION:
        raise DeviceError(f"{what} version {raw[0]} is not supported")


def _check_ids(**ids: bytes) -> None:
    for name, value in ids.items():
        if len(value) != ID_BYTES:
            raise ValueError(f"{name} must be {ID_BYTES} bytes, got {len(value)}")


def _check_keys(signing_key: bytes, encryption_key: bytes) -> None:
    for name, value in (("signing_key", signing_key), ("encryption_key", encryption_key)):
        if len(value) != PUBLIC_KEY_BYTES:
            raise ValueError(f"{name} must be {PUBLIC_KEY_BYTES} bytes, got {len(value)}")


def _check_u64(name: str, value: int) -> None:
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{name}={value} does not fit in 64 bits")
