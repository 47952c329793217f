"""Frame parsing: every limit is enforced before content is looked at, with a stable code."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode, FrameError, ProtocolError
from securemsg.protocol.state import State, check_allowed

LIMITS = frames.FrameLimits(max_frame_bytes=1000, max_json_depth=4)


def test_client_frames_round_trip_through_encode_client() -> None:
    samples = [
        frames.Auth("t0k"),
        frames.Ping(),
        frames.Send(b"\x01\x02"),
        frames.Ack(7),
        frames.Attach(uuid.uuid4(), b"s" * 64, None),
        frames.Attach(uuid.uuid4(), b"s", 3),
    ]
    for frame in samples:
        assert frames.parse_frame(frames.encode_client(frame), frames.FrameLimits()) == frame


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", ErrorCode.BAD_JSON),
        ("NaN", ErrorCode.BAD_JSON),
        ('{"type":"ack","seq":Infinity}', ErrorCode.BAD_JSON),
        ("[]", ErrorCode.BAD_FRAME),
        ('{"type":5}', ErrorCode.BAD_FRAME),
        ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"ping","extra":1}', ErrorCode.BAD_FRAME),
        ('{"type":"ack"}', ErrorCode.BAD_FRAME),
        ('{"type":"ack","seq":-1}', ErrorCode.BAD_FRAME),
        ('{"type":"ack","seq":true}', ErrorCode.BAD_FRAME),
        ('{"type":"ack","seq":1.0}', ErrorCode.BAD_FRAME),
        ('{"type":"ack","seq":99999999999999999999}', ErrorCode.BAD_FRAME),
        ('{"type":"attach","device":"not-a-uuid","signature":""}', ErrorCode.BAD_FRAME),
        ('{"type":"send","envelope":"abc"}', ErrorCode.BAD_BASE64),
        ('{"type":"send","envelope":"ab\\u00e9="}', ErrorCode.BAD_BASE64),
        ('{"type":"send","envelope":7}', ErrorCode.BAD_BASE64),
        ('{"type":"ping","x":[[[[[]]]]]}', ErrorCode.TOO_DEEP),
        ('{"type":"ping","x":' + "[" * 400 + "]" * 400 + "}", ErrorCode.TOO_DEEP),
    ],
)
def test_malformed_frame_raises_frame_error_with_its_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as caught:
        frames.parse_frame(text, LIMITS)
    assert caught.value.code is code
    assert caught.value.close is not None


def test_oversized_frame_is_refused_before_parsing_with_1009() -> None:
    with pytest.raises(FrameError) as caught:
        frames.parse_frame('{"type":"ping"}' + " " * 1000, LIMITS)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert caught.value.close is CloseCode.MESSAGE_TOO_BIG
    assert "exceeds the 1000-byte limit" in caught.value.message


def test_deep_nesting_beyond_the_interpreter_limit_is_too_deep_not_a_crash() -> None:
    text = '{"type":"ping","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(FrameError) as caught:
        frames.parse_frame(text, frames.FrameLimits(max_frame_bytes=1 << 20))
    assert caught.value.code is ErrorCode.TOO_DEEP


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_frame_error(text: str) -> None:
    with contextlib.suppress(FrameError):
        frames.parse_frame(text, LIMITS)


@given(
    st.dictionaries(
        st.sampled_from(["type", "token", "seq", "envelope", "device", "signature", "after"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=40),
            st.lists(st.integers(), max_size=3),
        ),
        max_size=5,
    )
)
def test_any_json_object_parses_or_raises_frame_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(FrameError):
        frames.parse_frame(json.dumps(obj), LIMITS)


def test_binary_frame_is_refused() -> None:
    with pytest.raises(FrameError):
        frames.parse_frame(b"{}", LIMITS)


@pytest.mark.parametrize(
    ("state", "kind", "code", "close"),
    [
        (State.AWAITING_AUTH, "ping", ErrorCode.AUTH_REQUIRED, CloseCode.AUTH_REQUIRED),
        (State.AWAITING_AUTH, "send", ErrorCode.AUTH_REQUIRED, CloseCode.AUTH_REQUIRED),
        (State.READY, "send", ErrorCode.NOT_ATTACHED, None),
        (State.READY, "auth", ErrorCode.BAD_FRAME, None),
        (State.ATTACHED, "attach", ErrorCode.BAD_FRAME, None),
    ],
)
def test_state_table_refuses_frames_out_of_order(
    state: State, kind: str, code: ErrorCode, close: CloseCode | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_allowed(state, kind)
    assert caught.value.code is code and caught.value.close is close


def test_state_table_allows_what_the_protocol_says() -> None:
    for state, kind in [
        (State.AWAITING_AUTH, "auth"),
        (State.READY, "attach"),
        (State.ATTACHED, "send"),
        (State.ATTACHED, "ack"),
        (State.READY, "ping"),
    ]:
        check_allowed(state, kind)


def test_attach_message_binds_purpose_challenge_and_device() -> None:
    device = uuid.UUID(int=1)
    message = frames.attach_message(b"c" * 32, device)
    assert message == b"securemsg/v1/attach\x00" + b"c" * 32 + device.bytes
