"""The SDK payload: what the SDK puts inside an envelope's encrypted body.

Each payload carries the sending device's counter for the conversation and the hash of the
previous payload that device sent there, so a receiver can tell a dropped, reordered, replayed or
duplicated message from the server's word alone. Pure: no I/O. docs/sdk.md ("Payload format")
is the reference.

    offset  size  field
    0       1     version = 1
    1       1     content type: 1 = text (UTF-8), 2 = bytes
    2       8     counter  u64, 1 for a device's first message in a conversation, then +1
    10      32    previous hash (all zero when counter = 1)
    42      ..    content

    hash = BLAKE2b-256("securemsg/v1/sdk-chain" 0x00 || conversation_id || message_id
                       || sender_device || payload)
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

from securemsg.protocol.errors import ProtocolError

VERSION = 1
HASH_BYTES = 32
NO_PREVIOUS = bytes(HASH_BYTES)
_PREFIX = struct.Struct(">BBQ32s")
PREFIX_BYTES = _PREFIX.size  # 42
_CHAIN_PURPOSE = b"securemsg/v1/sdk-chain"


class PayloadError(ProtocolError):
    """A decrypted payload is not a valid SDK payload."""


class ContentType(enum.IntEnum):
    TEXT = 1
    BYTES = 2


@dataclass(frozen=True, slots=True)
class Payload:
    counter: int
    previous_hash: bytes
    content: str | bytes

    @property
    def content_type(self) -> ContentType:
        return ContentType.TEXT if isinstance(self.content, str) else ContentType.BYTES


def encode_payload(payload: Payload) -> bytes:
    """The payload's bytes. Raise `ValueError` for a counter or hash of the wrong shape."""
    if not 1 <= payload.counter < 1 << 64:
        raise ValueError(f"counter {payload.counter} is outside 1..2^64-1")
    if len(payload.previous_hash) != HASH_BYTES:
        raise ValueError(f"previous hash must be {HASH_BYTES} bytes")
    if payload.counter == 1 and payload.previous_hash != NO_PREVIOUS:
        raise ValueError("the first message of a chain has no previous hash")
    content = payload.content
    body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    prefix = _PREFIX.pack(VERSION, payload.content_type, payload.counter, payload.previous_hash)
    return prefix + body


def decode_payload(data: bytes) -> Payload:
    """Parse a payload; raise `PayloadError` for anything malformed."""
    if len(data) < PREFIX_BYTES:
        raise PayloadError(f"payload of {len(data)} bytes is truncated")
    version, kind, counter, previous = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise PayloadError(f"payload version {version} is not supported")
    if counter < 1:
        raise PayloadError("payload counter must be at least 1")
    if counter == 1 and previous != NO_PREVIOUS:
        raise PayloadError("the first message of a chain has a previous hash")
    body = data[PREFIX_BYTES:]
    if kind == ContentType.TEXT:
        try:
            return Payload(counter, previous, body.decode("utf-8"))
        except UnicodeDecodeError:
            raise PayloadError("text payload is not valid UTF-8") from None
    if kind == ContentType.BYTES:
        return Payload(counter, previous, body)
    raise PayloadError(f"payload content type {kind} is not supported")


def chain_hash(
    *, conversation_id: bytes, message_id: bytes, sender_device: bytes, payload: bytes
) -> bytes:
    """The hash the sender's next payload names as its previous hash."""
    return hashlib.blake2b(
        b"".join((_CHAIN_PURPOSE, b"\x00", conversation_id, message_id, sender_device, payload)),
        digest_size=HASH_BYTES,
    ).digest()
