"""The envelope v1 layout without keys: parsing, structural checks, padding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemsg.protocol.envelope import (
    MIN_PADDED_BYTES,
    EnvelopeLimits,
    Wrap,
    check_limits,
    encode_header,
    envelope_size,
    pad,
    padded_size,
    parse_envelope,
    unpad,
)
from securemsg.protocol.errors import EnvelopeError, ErrorCode

LIMITS = EnvelopeLimits()
CONVERSATION = bytes(range(16))
MESSAGE = bytes(range(16, 32))
ACCOUNT = bytes(range(32, 48))
DEVICE = bytes(range(48, 64))


def device(n: int) -> bytes:
    return n.to_bytes(16, "big")


def build(
    *,
    recipients: int = 2,
    padded: int = MIN_PADDED_BYTES,
    timestamp_ms: int = 1_700_000_000_000,
    device_ids: list[bytes] | None = None,
) -> bytes:
    """A structurally valid envelope with placeholder wraps, body and signature."""
    ids = device_ids if device_ids is not None else [device(i + 1) for i in range(recipients)]
    wraps = [Wrap(d, bytes([0xA0 + i % 16]) * 80) for i, d in enumerate(ids)]
    body = b"\x11" * 24 + b"\x22" * padded + b"\x33" * 16
    header = encode_header(
        conversation_id=CONVERSATION,
        message_id=MESSAGE,
        sender_account=ACCOUNT,
        sender_device=DEVICE,
        timestamp_ms=timestamp_ms,
        wraps=wraps,
        key_commitment=b"\xcc" * 32,
        body_len=len(body),
    )
    return header + body + b"\x55" * 64


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def rejection(data: bytes, limits: EnvelopeLimits = LIMITS) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(data, limits)
    return caught.value


# -- the layout, byte by byte --------------------------------------------------------------------


def test_every_field_sits_at_its_documented_offset() -> None:
    wrap = device(7) + b"\x77" * 80
    body = b"\x01" * 24 + b"\x02" * 256 + b"\x03" * 16
    raw = (
        b"\x01\x01"
        + CONVERSATION
        + MESSAGE
        + ACCOUNT
        + DEVICE
        + struct.pack(">Q", 1234)
        + struct.pack(">H", 1)
        + wrap
        + b"\xcc" * 32
        + struct.pack(">I", len(body))
        + body
        + b"\x55" * 64
    )
    envelope = parse_envelope(raw, LIMITS)
    assert (envelope.version, envelope.suite) == (1, 1)
    assert envelope.conversation_id == CONVERSATION
    assert envelope.message_id == MESSAGE
    assert envelope.sender_account == ACCOUNT
    assert envelope.sender_device == DEVICE
    assert envelope.timestamp_ms == 1234
    assert envelope.wraps == (Wrap(device(7), b"\x77" * 80),)
    assert envelope.key_commitment == b"\xcc" * 32
    assert envelope.body == body
    assert envelope.body_nonce == b"\x01" * 24
    assert envelope.body_ciphertext == b"\x02" * 256 + b"\x03" * 16
    assert envelope.signature == b"\x55" * 64
    assert envelope.raw == raw
    assert envelope.signed_part == raw[:-64]
    assert envelope.header == raw[: 76 + 96 + 32 + 4]
    assert len(raw) == envelope_size(1, 256) == 568


def test_encode_header_and_parse_round_trip() -> None:
    ids = [device(9), device(3), device(5)]
    raw = build(device_ids=ids, padded=304, timestamp_ms=2**64 - 1)
    envelope = parse_envelope(raw, LIMITS)
    assert envelope.recipient_devices == tuple(ids)
    assert envelope.timestamp_ms == 2**64 - 1
    assert envelope.wrap_for(device(5)) == Wrap(device(5), bytes([0xA2]) * 80)
    assert envelope.wrap_for(device(4)) is None
    assert len(raw) == envelope_size(3, 304)


def test_parse_accepts_the_largest_envelope_within_the_limit() -> None:
    limits = EnvelopeLimits(max_envelope_bytes=envelope_size(32, 4096), max_recipients=32)
    envelope = parse_envelope(build(recipients=32, padded=4096), limits)
    assert len(envelope.wraps) == 32


# -- rejections ------------------------------------------------------------------------------


def test_size_limit_is_checked_before_anything_else() -> None:
    error = rejection(b"\xff" * 70000)
    assert error.code is ErrorCode.ENVELOPE_TOO_LARGE
    assert error.message == "envelope of 70000 bytes exceeds the 65536-byte limit"


def test_envelope_one_byte_over_a_custom_limit_is_too_large() -> None:
    raw = build()
    error = rejection(raw, EnvelopeLimits(max_envelope_bytes=len(raw) - 1))
    assert error.code is ErrorCode.ENVELOPE_TOO_LARGE


def test_empty_input_is_a_bad_envelope() -> None:
    error = rejection(b"")
    assert (error.code, error.message) == (ErrorCode.BAD_ENVELOPE, "envelope is empty")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_is_unsupported(version: int) -> None:
    raw = bytes([version]) + build()[1:]
    error = rejection(raw)
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert error.message == f"envelope version {version} is not supported"


@pytest.mark.parametrize("suite", [0, 2, 255])
def test_unknown_suite_is_unsupported(suite: int) -> None:
    raw = b"\x01" + bytes([suite]) + build()[2:]
    error = rejection(raw)
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert error.message == f"envelope suite {suite} is not supported"


def test_envelope_without_recipients_is_rejected() -> None:
    raw = bytearray(build(recipients=1))
    raw[74:76] = b"\x00\x00"
    del raw[76 : 76 + 96]
    error = rejection(bytes(raw))
    assert (error.code, error.message) == (ErrorCode.BAD_ENVELOPE, "envelope has no recipients")


def test_more_recipients_than_the_limit_are_rejected() -> None:
    error = rejection(build(recipients=33))
    assert error.code is ErrorCode.TOO_MANY_RECIPIENTS
    assert error.message == "envelope has 33 recipients; the limit is 32"


def test_recipient_limit_is_checked_from_the_count_before_reading_wraps() -> None:
    raw = bytearray(build(recipients=1))
    raw[74:76] = struct.pack(">H", 0xFFFF)
    assert rejection(bytes(raw)).code is ErrorCode.TOO_MANY_RECIPIENTS


def test_duplicate_recipient_device_is_rejected() -> None:
    raw = bytearray(build(recipients=3))
    raw[76 + 2 * 96 : 76 + 2 * 96 + 16] = device(1)
    error = rejection(bytes(raw))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.message == f"envelope wraps to device {device(1).hex()} twice"


def test_trailing_bytes_are_rejected() -> None:
    error = rejection(build() + b"\x00")
    assert (error.code, error.message) == (ErrorCode.BAD_ENVELOPE, "envelope has 1 trailing bytes")


def test_every_truncation_is_rejected() -> None:
    raw = build(recipients=2)
    for size in range(len(raw)):
        assert rejection(raw[:size]).code is ErrorCode.BAD_ENVELOPE


def test_body_length_beyond_the_data_is_truncation_not_an_overread() -> None:
    raw = bytearray(build(recipients=1))
    body_len_at = 76 + 96 + 32
    raw[body_len_at : body_len_at + 4] = struct.pack(">I", 0xFFFFFFFF)
    error = rejection(bytes(raw))
    assert error.message.startswith(f"envelope of {len(raw)} bytes is truncated")


@pytest.mark.parametrize("padded", [0, 255, 257, 300, 1000])
def test_body_that_is_not_a_padded_size_is_rejected(padded: int) -> None:
    error = rejection(build(padded=padded))
    assert error.code is ErrorCode.BAD_ENVELOPE
    assert error.message == f"body of {padded + 40} bytes does not hold a padded plaintext"


def test_check_limits_reports_like_the_parser() -> None:
    with pytest.raises(EnvelopeError) as caught:
        check_limits(size=100, recipient_count=40, limits=LIMITS)
    assert caught.value.code is ErrorCode.TOO_MANY_RECIPIENTS


# -- encoding is strict about shapes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conversation_id", b"x" * 15),
        ("message_id", b"x" * 17),
        ("sender_account", b""),
        ("sender_device", b"x" * 32),
        ("key_commitment", b"x" * 31),
        ("timestamp_ms", -1),
        ("timestamp_ms", 2**64),
        ("body_len", 2**32),
        ("suite", 2),
    ],
)
def test_encode_header_rejects_malformed_fields(field: str, value: object) -> None:
    fields: dict[str, object] = {
        "conversation_id": CONVERSATION,
        "message_id": MESSAGE,
        "sender_account": ACCOUNT,
        "sender_device": DEVICE,
        "timestamp_ms": 0,
        "wraps": [Wrap(device(1), b"\x00" * 80)],
        "key_commitment": b"\x00" * 32,
        "body_len": 296,
    }
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        encode_header(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wraps",
    [
        [],
        [Wrap(device(1), b"\x00" * 80), Wrap(device(1), b"\x01" * 80)],
        [Wrap(b"short", b"\x00" * 80)],
        [Wrap(device(1), b"\x00" * 48)],
    ],
)
def test_encode_header_rejects_malformed_wraps(wraps: list[Wrap]) -> None:
    with pytest.raises(ValueError):
        encode_header(
            conversation_id=CONVERSATION,
            message_id=MESSAGE,
            sender_account=ACCOUNT,
            sender_device=DEVICE,
            timestamp_ms=0,
            wraps=wraps,
            key_commitment=b"\x00" * 32,
            body_len=296,
        )


def test_limits_that_cannot_hold_an_envelope_are_refused() -> None:
    with pytest.raises(ValueError):
        EnvelopeLimits(max_envelope_bytes=100)
    with pytest.raises(ValueError):
        EnvelopeLimits(max_recipients=0)


# -- padding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "size"),
    [(0, 256), (1, 256), (256, 256), (257, 272), (300, 304), (1000, 1024), (1025, 1088),
     (4000, 4096), (65000, 65536)],
)  # fmt: skip
def test_padded_sizes_follow_padme_with_a_256_byte_floor(length: int, size: int) -> None:
    assert padded_size(length) == size


@given(st.integers(min_value=0, max_value=1 << 24))
def test_padded_size_is_idempotent_and_wastes_under_12_percent(length: int) -> None:
    size = padded_size(length)
    assert size >= length
    assert padded_size(size) == size
    assert size == 256 or size - length <= length * 0.12


@given(st.binary(max_size=5000))
def test_pad_then_unpad_returns_the_plaintext(plaintext: bytes) -> None:
    padded = pad(plaintext)
    assert len(padded) == padded_size(len(plaintext) + 4)
    assert padded[:4] == len(plaintext).to_bytes(4, "big")
    assert unpad(padded) == plaintext


def test_empty_plaintext_pads_to_the_minimum() -> None:
    assert pad(b"") == bytes(256)
    assert unpad(bytes(256)) == b""


@pytest.mark.parametrize(
    ("padded", "message"),
    [
        (bytes(255), "padded plaintext of 255 bytes has no padded size"),
        (bytes(257), "padded plaintext of 257 bytes has no padded size"),
        (u32(253) + bytes(252), "padded plaintext claims 253 bytes but holds at most 252"),
        (u32(300) + bytes(508), "300 bytes of plaintext are padded to the wrong size"),
        (u32(1) + b"a" + b"\x00" * 250 + b"\x01", "padding bytes are not zero"),
    ],
)  # fmt: skip
def test_unpad_rejects_malformed_padding(padded: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        unpad(padded)
    assert caught.value.message == message


# -- fuzz: nothing but EnvelopeError, ever --------------------------------------------------------

SMALL_LIMITS = EnvelopeLimits(max_envelope_bytes=4096, max_recipients=4)


@settings(max_examples=500)
@given(st.binary(max_size=5000))
def test_random_bytes_raise_only_envelope_error(data: bytes) -> None:
    try:
        parse_envelope(data, SMALL_LIMITS)
    except EnvelopeError as error:
        assert error.code in {
            ErrorCode.BAD_ENVELOPE,
            ErrorCode.ENVELOPE_TOO_LARGE,
            ErrorCode.TOO_MANY_RECIPIENTS,
            ErrorCode.UNSUPPORTED_VERSION,
        }
        assert error.message == error.message.lower()


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    raw = bytearray(build(recipients=draw(st.integers(1, 4))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=200))
        elif action == "delete":
            del raw[at : at + draw(st.integers(1, 200))]
        elif action == "truncate":
            del raw[at:]
        elif action == "set" and len(raw) > at + 4:
            raw[at : at + 4] = draw(
                st.sampled_from([b"\x00" * 4, b"\xff" * 4, b"\x00\x00\x01\x00"])
            )
    return bytes(raw)


@settings(max_examples=500)
@given(mutated_envelopes())
def test_mutated_envelopes_parse_or_raise_envelope_error(data: bytes) -> None:
    try:
        envelope = parse_envelope(data, SMALL_LIMITS)
    except EnvelopeError:
        return
    assert envelope.raw == data
    assert len(data) == envelope_size(len(envelope.wraps), len(envelope.body) - 40)
