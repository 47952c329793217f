"""The hot-path server frames are formatted directly; they must equal what `encode` makes."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from securemsg.protocol import frames


@given(seq=st.integers(0, 2**63 - 1), data=st.binary(max_size=300))
def test_deliver_frame_is_encode(seq: int, data: bytes) -> None:
    expected = frames.encode("deliver", seq=seq, envelope=frames.b64(data))
    assert frames.deliver_frame(seq, data) == expected
    assert json.loads(frames.deliver_frame(seq, data, "grant")) == {
        "type": "deliver",
        "seq": seq,
        "envelope": frames.b64(data),
        "kind": "grant",
    }
    assert frames.deliver_frame(seq, data, "grant_ended") == frames.encode(
        "deliver", seq=seq, envelope=frames.b64(data), kind="grant_ended"
    )


@given(message_id=st.binary(min_size=16, max_size=16), received_ms=st.integers(0, 2**63 - 1))
def test_accepted_frame_is_encode(message_id: bytes, received_ms: int) -> None:
    conversation = uuid.uuid4()
    assert frames.accepted_frame(conversation, message_id, received_ms) == frames.encode(
        "accepted",
        conversation=str(conversation),
        message=message_id.hex(),
        received_ms=received_ms,
    )
