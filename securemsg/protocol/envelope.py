"""The envelope v1 byte layout: parsing and structural checks without keys, and padding.

Everything here is pure and key-free: the server runs `parse_envelope` on every send, and the crypto
layer (`securemsg.crypto.envelope`) builds on `encode_header`, `pad` and `unpad`. Any input to
`parse_envelope`, however malformed, raises `EnvelopeError` with a stable code and nothing else.
docs/envelope.md is the reference for every byte.

    offset  size        field
    0       1           version          = 1
    1       1           suite            = 1 (Ed25519, X25519 sealed-box wraps, XChaCha20-Poly1305)
    2       16          conversation_id
    18      16          message_id       client-generated random bytes
    34      16          sender_account
    50      16          sender_device
    66      8           timestamp_ms     u64, milliseconds since the Unix epoch
    74      2           wrap_count       u16, 1..limits.max_recipients
    76      96 * n      wraps            device_id (16) + wrapped content key (80) each
    ..      32          key_commitment
    ..      4           body_len         u32
    ..      body_len    body             nonce (24) + ciphertext of the padded plaintext + tag (16)
    ..      64          signature        Ed25519 by the sender device over every preceding byte

All integers are big-endian. The header (offset 0 up to and including body_len) is the body's
associated data; the signature covers header and body.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from securemsg.protocol.errors import EnvelopeError, ErrorCode

VERSION = 1
SUITE_V1 = 1
SUPPORTED_SUITES = frozenset({SUITE_V1})

ID_BYTES = 16
KEY_BYTES = 32
WRAPPED_KEY_BYTES = 80  # X25519 sealed box of a 32-byte key: ephemeral key 32 + key 32 + tag 16
WRAP_BYTES = ID_BYTES + WRAPPED_KEY_BYTES
COMMITMENT_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
SIGNATURE_BYTES = 64

MIN_PADDED_BYTES = 256
LENGTH_PREFIX_BYTES = 4

_PREFIX = struct.Struct(">BB16s16s16s16sQH")  # version .. wrap_count
_BODY_LEN = struct.Struct(">I")
PREFIX_BYTES = _PREFIX.size  # 76
_TRAILER_BYTES = COMMITMENT_BYTES + _BODY_LEN.size  # after the wraps, before the body
MIN_BODY_BYTES = NONCE_BYTES + MIN_PADDED_BYTES + TAG_BYTES


@dataclass(frozen=True, slots=True)
class EnvelopeLimits:
    """Structural limits the parser enforces; both are server settings with these defaults."""

    max_envelope_bytes: int = 65536
    max_recipients: int = 32

    def __post_init__(self) -> None:
        if self.max_envelope_bytes < envelope_size(1, MIN_PADDED_BYTES):
            raise ValueError(f"max_envelope_bytes={self.max_envelope_bytes} is too small")
        if not 1 <= self.max_recipients <= 0xFFFF:
            raise ValueError(f"max_recipients={self.max_recipients} is outside 1..65535")


@dataclass(frozen=True, slots=True)
class Wrap:
    """The content key sealed to one recipient device."""

    device_id: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A structurally valid envelope; nothing in it is authentic until the signature is checked."""

    version: int
    suite: int
    conversation_id: bytes
    message_id: bytes
    sender_account: bytes
    sender_device: bytes
    timestamp_ms: int
    wraps: tuple[Wrap, ...]
    key_commitment: bytes
    body: bytes
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def signed_part(self) -> bytes:
        """Every byte before the signature (the signature prefixes it with its purpose string)."""
        return self.raw[:-SIGNATURE_BYTES]

    @property
    def header(self) -> bytes:
        """Every byte before the body, including body_len: the body's associated data."""
        return self.raw[: len(self.raw) - SIGNATURE_BYTES - len(self.body)]

    @property
    def body_nonce(self) -> bytes:
        return self.body[:NONCE_BYTES]

    @property
    def body_ciphertext(self) -> bytes:
        return self.body[NONCE_BYTES:]

    @property
    def recipient_devices(self) -> tuple[bytes, ...]:
        return tuple(wrap.device_id for wrap in self.wraps)

    def wrap_for(self, device_id: bytes) -> Wrap | None:
        for wrap in self.wraps:
            if wrap.device_id == device_id:
                return wrap
        return None


def envelope_size(recipient_count: int, padded_plaintext_bytes: int) -> int:
    """The encoded size of an envelope with this many wraps and this padded plaintext size."""
    return (
        PREFIX_BYTES
        + WRAP_BYTES * recipient_count
        + _TRAILER_BYTES
        + NONCE_BYTES
        + padded_plaintext_bytes
        + TAG_BYTES
        + SIGNATURE_BYTES
    )


def check_limits(*, size: int, recipient_count: int, limits: EnvelopeLimits) -> None:
    """Raise the parser's error for an envelope of this size and recipient count, if any."""
    if size > limits.max_envelope_bytes:
        raise _too_large(size, limits)
    if recipient_count == 0:
        raise EnvelopeError("envelope has no recipients")
    if recipient_count > limits.max_recipients:
        raise EnvelopeError(
            f"envelope has {recipient_count} recipients; the limit is {limits.max_recipients}",
            code=ErrorCode.TOO_MANY_RECIPIENTS,
        )


def parse_envelope(data: bytes, limits: EnvelopeLimits) -> Envelope:
    """Check the structure of `data` and return its fields; raise `EnvelopeError` otherwise.

    Checks, in order: size limit, version, suite, recipient count, exact length (no trailing
    bytes), body length is a padded size, no duplicate recipient device. No key is involved.
    """
    size = len(data)
    if size > limits.max_envelope_bytes:
        raise _too_large(size, limits)
    if size == 0:
        raise EnvelopeError("envelope is empty")
    raw = bytes(data)
    if raw[0] != VERSION:
        raise EnvelopeError(
            f"envelope version {raw[0]} is not supported", code=ErrorCode.UNSUPPORTED_VERSION
        )
    if size < 2:
        raise EnvelopeError(f"envelope of {size} bytes is truncated")
    if raw[1] not in SUPPORTED_SUITES:
        raise EnvelopeError(
            f"envelope suite {raw[1]} is not supported", code=ErrorCode.UNSUPPORTED_VERSION
        )
    if size < PREFIX_BYTES:
        raise EnvelopeError(f"envelope of {size} bytes is truncated")
    (
        version,
        suite,
        conversation_id,
        message_id,
        sender_account,
        sender_device,
        timestamp_ms,
        wrap_count,
    ) = _PREFIX.unpack_from(raw)
    check_limits(size=size, recipient_count=wrap_count, limits=limits)

    commitment_at = PREFIX_BYTES + WRAP_BYTES * wrap_count
    body_at = commitment_at + _TRAILER_BYTES
    if size < body_at:
        raise EnvelopeError(f"envelope of {size} bytes is truncated")
    (body_len,) = _BODY_LEN.unpack_from(raw, commitment_at + COMMITMENT_BYTES)
    expected = body_at + body_len + SIGNATURE_BYTES
    if size < expected:
        raise EnvelopeError(f"envelope of {size} bytes is truncated: its fields need {expected}")
    if size > expected:
        raise EnvelopeError(f"envelope has {size - expected} trailing bytes")
    padded = body_len - NONCE_BYTES - TAG_BYTES
    if padded < MIN_PADDED_BYTES or padded_size(padded) != padded:
        raise EnvelopeError(f"body of {body_len} bytes does not hold a padded plaintext")

    wraps = tuple(
        Wrap(raw[at : at + ID_BYTES], raw[at + ID_BYTES : at + WRAP_BYTES])
        for at in range(PREFIX_BYTES, commitment_at, WRAP_BYTES)
    )
    if len({wrap.device_id for wrap in wraps}) != wrap_count:
        raise EnvelopeError(f"envelope wraps to device {_first_duplicate(wraps).hex()} twice")

    return Envelope(
        version=version,
        suite=suite,
        conversation_id=conversation_id,
        message_id=message_id,
        sender_account=sender_account,
        sender_device=sender_device,
        timestamp_ms=timestamp_ms,
        wraps=wraps,
        key_commitment=raw[commitment_at : commitment_at + COMMITMENT_BYTES],
        body=raw[body_at : body_at + body_len],
        signature=raw[-SIGNATURE_BYTES:],
        raw=raw,
    )


def encode_header(
    *,
    conversation_id: bytes,
    message_id: bytes,
    sender_account: bytes,
    sender_device: bytes,
    timestamp_ms: int,
    wraps: Sequence[Wrap],
    key_commitment: bytes,
    body_len: int,
    suite: int = SUITE_V1,
) -> bytes:
    """Encode every byte before the body. Raise `ValueError` for a field of the wrong shape."""
    for name, value in (
        ("conversation_id", conversation_id),
        ("message_id", message_id),
        ("sender_account", sender_account),
        ("sender_device", sender_device),
    ):
        _check_length(name, value, ID_BYTES)
    _check_length("key_commitment", key_commitment, COMMITMENT_BYTES)
    if suite not in SUPPORTED_SUITES:
        raise ValueError(f"suite {suite} is not supported")
    if not 0 <= timestamp_ms < 1 << 64:
        raise ValueError(f"timestamp_ms={timestamp_ms} does not fit in 64 bits")
    if not 0 <= body_len < 1 << 32:
        raise ValueError(f"body_len={body_len} does not fit in 32 bits")
    if not 1 <= len(wraps) <= 0xFFFF:
        raise ValueError(f"an envelope needs 1..65535 wraps, got {len(wraps)}")
    if len({wrap.device_id for wrap in wraps}) != len(wraps):
        raise ValueError(f"wraps name device {_first_duplicate(wraps).hex()} twice")
    parts = [
        _PREFIX.pack(
            VERSION,
            suite,
            conversation_id,
            message_id,
            sender_account,
            sender_device,
            timestamp_ms,
            len(wraps),
        )
    ]
    for wrap in wraps:
        _check_length("wrap device_id", wrap.device_id, ID_BYTES)
        _check_length("wrapped_key", wrap.wrapped_key, WRAPPED_KEY_BYTES)
        parts += (wrap.device_id, wrap.wrapped_key)
    parts += (key_commitment, _BODY_LEN.pack(body_len))
    return b"".join(parts)


# Padding. Padmé (Nikitin et al., PETS 2019) rounds a length L to a value whose low
# floor(log2 L) - floor(log2 floor(log2 L)) - 1 bits are zero, so it leaks O(log log L) bits
# and wastes at most 12% (less for larger L); below 256 bytes everything pads to 256.
# The padded plaintext is: true length (u32) || plaintext || zero bytes.


def padded_size(length: int) -> int:
    """The padded size for `length` bytes of padded content (length prefix included)."""
    if length <= MIN_PADDED_BYTES:
        return MIN_PADDED_BYTES
    exponent = length.bit_length() - 1  # floor(log2 L)
    low_bits = exponent - exponent.bit_length()  # E - (floor(log2 E) + 1)
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


def pad(plaintext: bytes) -> bytes:
    """Prefix `plaintext` with its length and pad it with zeros to its Padmé size."""
    length = len(plaintext)
    if length >= 1 << 32:
        raise ValueError(f"plaintext of {length} bytes is too long to pad")
    total = padded_size(LENGTH_PREFIX_BYTES + length)
    return b"".join(
        (
            length.to_bytes(LENGTH_PREFIX_BYTES, "big"),
            plaintext,
            bytes(total - LENGTH_PREFIX_BYTES - length),
        )
    )


def unpad(padded: bytes) -> bytes:
    """Return the plaintext inside `padded`; raise `EnvelopeError` if the padding is malformed."""
    if len(padded) < MIN_PADDED_BYTES or padded_size(len(padded)) != len(padded):
        raise EnvelopeError(f"padded plaintext of {len(padded)} bytes has no padded size")
    length = int.from_bytes(padded[:LENGTH_PREFIX_BYTES], "big")
    end = LENGTH_PREFIX_BYTES + length
    if end > len(padded):
        raise EnvelopeError(
            f"padded plaintext claims {length} bytes but holds at most {len(padded) - 4}"
        )
    if padded_size(end) != len(padded):
        raise EnvelopeError(f"{length} bytes of plaintext are padded to the wrong size")
    if padded[end:] != bytes(len(padded) - end):
        raise EnvelopeError("padding bytes are not zero")
    return padded[LENGTH_PREFIX_BYTES:end]


def _too_large(size: int, limits: EnvelopeLimits) -> EnvelopeError:
    return EnvelopeError(
        f"envelope of {size} bytes exceeds the {limits.max_envelope_bytes}-byte limit",
        code=ErrorCode.ENVELOPE_TOO_LARGE,
    )


def _check_length(name: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise ValueError(f"{name} must be {expected} bytes, got {len(value)}")


def _first_duplicate(wraps: Sequence[Wrap]) -> bytes:
    seen: set[bytes] = set()
    for wrap in wraps:
        if wrap.device_id in seen:
            return wrap.device_id
        seen.add(wrap.device_id)
    raise AssertionError("no duplicate")  # pragma: no cover - only called after a set check
