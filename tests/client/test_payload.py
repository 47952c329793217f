"""The SDK payload inside the envelope: layout, content types, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemsg.client.payload import (
    NO_PREVIOUS,
    ContentType,
    Payload,
    PayloadError,
    chain_hash,
    decode_payload,
    encode_payload,
)


def test_text_payload_layout() -> None:
    raw = encode_payload(Payload(1, NO_PREVIOUS, "hi"))
    assert raw == b"\x01\x01" + (1).to_bytes(8, "big") + bytes(32) + b"hi"


def test_bytes_payload_layout() -> None:
    previous = b"\xaa" * 32
    raw = encode_payload(Payload(7, previous, b"\x00\x01"))
    assert raw == b"\x01\x02" + (7).to_bytes(8, "big") + previous + b"\x00\x01"
    assert decode_payload(raw).content_type is ContentType.BYTES


@given(
    st.integers(min_value=2, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.one_of(st.text(), st.binary()),
)
def test_payloads_round_trip(counter: int, previous: bytes, content: str | bytes) -> None:
    payload = Payload(counter, previous, content)
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x01" + bytes(8), "truncated"),
        (b"\x02\x01" + (1).to_bytes(8, "big") + bytes(32), "version 2"),
        (b"\x01\x03" + (1).to_bytes(8, "big") + bytes(32), "content type 3"),
        (b"\x01\x01" + (0).to_bytes(8, "big") + bytes(32), "at least 1"),
        (b"\x01\x01" + (1).to_bytes(8, "big") + b"\x01" * 32, "has a previous hash"),
        (b"\x01\x01" + (2).to_bytes(8, "big") + bytes(32) + b"\xff", "UTF-8"),
    ],
)
def test_malformed_payloads_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_payload(raw)


def test_chain_hash_binds_conversation_message_and_sender() -> None:
    base = {"conversation_id": b"c" * 16, "message_id": b"m" * 16, "sender_device": b"d" * 16}
    digest = chain_hash(payload=b"p", **base)
    for field in base:
        assert chain_hash(payload=b"p", **{**base, field: b"x" * 16}) != digest
    assert chain_hash(payload=b"q", **base) != digest
