"""The WebSocket connection state machine, as a table.

    AWAITING_AUTH --auth ok--> READY --attach ok--> ATTACHED
    any state --close--> CLOSED

A frame not allowed in the current state is answered per `RULES`: before authentication the
connection is closed (nothing is processed); afterwards the frame is refused with an error and
the connection stays open.
"""

from __future__ import annotations

import enum

from securemsg.protocol.errors import CloseCode, ErrorCode, ProtocolError


class State(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    ATTACHED = "attached"
    CLOSED = "closed"


ALLOWED: dict[State, frozenset[str]] = {
    State.AWAITING_AUTH: frozenset({"auth"}),
    State.READY: frozenset({"ping", "attach"}),
    State.ATTACHED: frozenset({"ping", "send", "ack"}),
    State.CLOSED: frozenset(),
}


def check_allowed(state: State, frame_type: str) -> None:
    """Raise the ProtocolError the rules prescribe when `frame_type` is not allowed in `state`."""
    if frame_type in ALLOWED[state]:
        return
    if state is State.AWAITING_AUTH:
        raise ProtocolError(
            f"{frame_type} frame before authentication",
            code=ErrorCode.AUTH_REQUIRED,
            close=CloseCode.AUTH_REQUIRED,
        )
    if frame_type in ("send", "ack"):
        raise ProtocolError(
            f"{frame_type} frame before attaching a device", code=ErrorCode.NOT_ATTACHED
        )
    raise ProtocolError(
        f"{frame_type} frame not allowed once {state.value.replace('_', ' ')}",
        code=ErrorCode.BAD_FRAME,
    )
