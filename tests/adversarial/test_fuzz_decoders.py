"""Property-based fuzzing of every decoder in securemsg/protocol/.

Each decoder gets random input and mutations of valid input. The property is the one the layer
promises: a value that satisfies the layout's invariants, or the decoder's own `ProtocolError`
subclass with a stable wire code; never any other exception (which on the server would become a
traceback, a 500 or a 1011).
"""

from __future__ import annotations

import json
import os
import string
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securemsg.crypto.devices import certify_device, sign_device_list
from securemsg.crypto.envelope import seal_envelope
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.protocol import devices, envelope, frames
from securemsg.protocol.errors import CloseCode, EnvelopeError, ErrorCode, FrameError, ProtocolError
from securemsg.protocol.state import ALLOWED, State, check_allowed
from tests.adversarial.strategies import frame_objects, mutated

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = frames.FrameLimits(max_frame_bytes=4096, max_json_depth=4)
ENVELOPE_LIMITS = envelope.EnvelopeLimits(max_envelope_bytes=8192, max_recipients=4)
LIST_LIMITS = devices.DeviceListLimits(max_devices=4)
CLOSES = {CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG}

# -- valid specimens to mutate -------------------------------------------------------------

_IDENTITY = IdentityKey.from_seed(b"\x01" * 32)
_DEVICES = [DeviceKeys.from_seed(bytes([i]) * 32) for i in range(2, 5)]
_ACCOUNT = uuid.UUID(int=7).bytes
_DEVICE_IDS = [uuid.UUID(int=100 + i).bytes for i in range(3)]


def _envelope(plaintext: bytes, recipients: int) -> bytes:
    return seal_envelope(
        sender=_DEVICES[0],
        sender_account=_ACCOUNT,
        sender_device=_DEVICE_IDS[0],
        conversation_id=uuid.UUID(int=9).bytes,
        message_id=os.urandom(16),
        timestamp_ms=1_700_000_000_000,
        recipients={_DEVICE_IDS[i]: _DEVICES[i].encryption_key for i in range(1, 1 + recipients)},
        plaintext=plaintext,
        limits=ENVELOPE_LIMITS,
    )


VALID_ENVELOPES = [_envelope(b"x" * n, r) for n, r in ((0, 1), (300, 2), (1200, 1))]
VALID_CERTIFICATE = certify_device(
    _IDENTITY,
    account_id=_ACCOUNT,
    device_id=_DEVICE_IDS[0],
    device=_DEVICES[0].public_keys,
    created_ms=1_700_000_000_000,
)
VALID_LIST = sign_device_list(
    _IDENTITY,
    account_id=_ACCOUNT,
    list_version=3,
    devices=[
        devices.DeviceEntry(d, k.signing_key, k.encryption_key)
        for d, k in zip(_DEVICE_IDS, _DEVICES, strict=True)
    ],
    created_ms=1_700_000_000_000,
)


# -- frames ----------------------------------------------------------------------------------


def _assert_frame_error(error: FrameError) -> None:
    assert isinstance(error.code, ErrorCode)
    assert error.close in CLOSES
    assert len(error.message) < 300


def _check_parse(data: str | bytes) -> None:
    try:
        frame = frames.parse_frame(data, LIMITS)
    except FrameError as error:
        _assert_frame_error(error)
        return
    # A frame that parsed survives a round trip unchanged.
    assert frames.parse_frame(frames.encode_client(frame), LIMITS) == frame


@FUZZ
@given(st.text(max_size=600) | st.binary(max_size=600))
def test_random_text_and_bytes_parse_to_a_frame_or_a_frame_error(data: str | bytes) -> None:
    _check_parse(data)


@FUZZ
@given(frame_objects)
def test_random_json_objects_parse_to_a_frame_or_a_frame_error(obj: dict[str, Any]) -> None:
    _check_parse(json.dumps(obj))


@FUZZ
@given(
    st.sampled_from(
        [
            '{"type":"auth","token":"abc"}',
            '{"type":"ping"}',
            '{"type":"ack","seq":12}',
            '{"type":"attach","device":"00000000-0000-0000-0000-000000000001","signature":"QUJD",'
            '"after":3}',
            '{"type":"send","envelope":"' + frames.b64(VALID_ENVELOPES[0]) + '"}',
        ]
    ),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(list('{}[]",:0-9eE.+\\\x00é\ud800 ntf'))),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_valid_frames_parse_or_raise_a_frame_error(
    text: str, edits: list[tuple[int, str]]
) -> None:
    chars = list(text)
    for at, char in edits:
        at %= len(chars) + 1
        chars[at:at] = [char]
    _check_parse("".join(chars))


@FUZZ
@given(st.integers(0, 60), st.sampled_from("[{"), st.integers(1, 6))
def test_nesting_beyond_the_depth_limit_is_too_deep_at_any_depth(
    depth: int, opener: str, limit: int
) -> None:
    closer = "]" if opener == "[" else "}"
    inner = (opener if opener == "[" else '{"a":') * depth + "1" + closer * depth
    text = '{"type":"ping","x":' + inner + "}" if depth else '{"type":"ping"}'
    try:
        frames.loads_json(text, frames.FrameLimits(max_frame_bytes=10**6, max_json_depth=limit))
    except FrameError as error:
        assert error.code is ErrorCode.TOO_DEEP
        assert depth + 1 > limit
    else:
        assert depth + 1 <= limit


@FUZZ
@given(st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \n\x00é", max_size=40))
def test_base64_fields_decode_or_raise_bad_base64(value: str) -> None:
    try:
        decoded = frames.decode_b64(value, what="field")
    except FrameError as error:
        assert error.code is ErrorCode.BAD_BASE64
    else:
        assert len(decoded) == len(value) // 4 * 3 - value.count("=")


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400) | frame_objects.map(json.dumps))
def test_server_frames_parse_to_an_object_with_a_type_or_a_frame_error(data: str | bytes) -> None:
    try:
        obj = frames.parse_server_frame(data, LIMITS)
    except FrameError as error:
        assert isinstance(error.code, ErrorCode)
    else:
        assert isinstance(obj["type"], str)


@FUZZ
@given(
    st.sampled_from(list(State)),
    st.text(max_size=12) | st.sampled_from(["auth", "ping", "attach", "send", "ack"]),
)
def test_the_state_table_allows_exactly_its_frames_and_closes_only_before_auth(
    state: State, frame_type: str
) -> None:
    try:
        check_allowed(state, frame_type)
    except ProtocolError as error:
        assert frame_type not in ALLOWED[state]
        assert (error.close is CloseCode.AUTH_REQUIRED) == (state is State.AWAITING_AUTH)
    else:
        assert frame_type in ALLOWED[state]


# -- envelopes -------------------------------------------------------------------------------


def _check_envelope(data: bytes) -> None:
    try:
        parsed = envelope.parse_envelope(data, ENVELOPE_LIMITS)
    except EnvelopeError as error:
        assert isinstance(error.code, ErrorCode)
        assert error.close is None  # a refused envelope never ends the connection
        return
    assert parsed.raw == data
    assert 1 <= len(parsed.wraps) <= ENVELOPE_LIMITS.max_recipients
    assert len(set(parsed.recipient_devices)) == len(parsed.wraps)
    padded = len(parsed.body) - envelope.NONCE_BYTES - envelope.TAG_BYTES
    assert len(data) == envelope.envelope_size(len(parsed.wraps), padded)
    assert envelope.padded_size(padded) == padded


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_parse_to_an_envelope_or_an_envelope_error(data: bytes) -> None:
    _check_envelope(data)


@settings(FUZZ, max_examples=600)
@given(mutated(VALID_ENVELOPES))
def test_mutated_envelopes_parse_to_a_consistent_envelope_or_an_envelope_error(
    data: bytes,
) -> None:
    _check_envelope(data)


@FUZZ
@given(st.binary(max_size=1500) | mutated([envelope.pad(b"hello"), envelope.pad(b"y" * 700)]))
def test_unpad_returns_the_plaintext_or_an_envelope_error(data: bytes) -> None:
    try:
        plaintext = envelope.unpad(data)
    except EnvelopeError as error:
        assert error.code is ErrorCode.BAD_ENVELOPE
    else:
        assert envelope.pad(plaintext) == data  # one padded form per plaintext


# -- device certificates and lists -----------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400) | mutated([VALID_CERTIFICATE]))
def test_certificates_parse_to_their_fixed_layout_or_a_device_error(data: bytes) -> None:
    try:
        certificate = devices.parse_device_certificate(data)
    except devices.DeviceError as error:
        assert error.code is ErrorCode.BAD_DEVICE
    else:
        assert len(data) == devices.CERTIFICATE_BYTES and certificate.raw == data


@settings(FUZZ, max_examples=500)
@given(st.binary(max_size=600) | mutated([VALID_LIST]))
def test_device_lists_parse_to_a_sorted_bounded_list_or_a_device_error(data: bytes) -> None:
    try:
        listed = devices.parse_device_list(data, LIST_LIMITS)
    except devices.DeviceError as error:
        assert error.code is ErrorCode.BAD_DEVICE
    else:
        ids = listed.device_ids
        assert list(ids) == sorted(set(ids)) and len(ids) <= LIST_LIMITS.max_devices
        assert listed.list_version >= 1 and listed.raw == data


@FUZZ
@given(st.integers(0, 2**64 - 1) | st.integers(0, 6), st.booleans())
def test_the_rollback_check_accepts_only_newer_or_identical_lists(
    min_version: int, same_bytes: bool
) -> None:
    listed = devices.parse_device_list(VALID_LIST, LIST_LIMITS)
    current = VALID_LIST if same_bytes else VALID_LIST[:-1] + b"\x00"
    try:
        devices.check_not_rollback(listed, min_version=min_version, current=current)
    except devices.StaleDeviceList as error:
        assert error.code is ErrorCode.STALE_DEVICE_LIST
        assert listed.list_version < min_version or (
            listed.list_version == min_version and not same_bytes
        )
    else:
        assert listed.list_version > min_version or (
            listed.list_version == min_version and same_bytes
        )
