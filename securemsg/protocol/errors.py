"""Wire error codes, WebSocket close codes, and the exceptions that carry them.

Every error a peer can cause has a stable string code (sent in `error` frames and HTTP bodies) and,
where the protocol ends the connection, a close code. docs/protocol.md lists both tables; a test
keeps them in step with these enums.
"""

from __future__ import annotations

import enum

from securemsg.errors import SecuremsgError


class ErrorCode(enum.StrEnum):
    # frame syntax (connection is closed with CloseCode.PROTOCOL_ERROR or MESSAGE_TOO_BIG)
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    TOO_DEEP = "too_deep"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_BASE64 = "bad_base64"
    # authentication and session
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    SESSION_ENDED = "session_ended"
    IDLE_TIMEOUT = "idle_timeout"
    LOGIN_FAILED = "login_failed"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ORIGIN_REJECTED = "origin_rejected"
    TOO_MANY_SOCKETS = "too_many_sockets"
    # devices and envelopes (the connection stays open; the frame is refused)
    BAD_DEVICE = "bad_device"
    NOT_ATTACHED = "not_attached"
    BAD_ENVELOPE = "bad_envelope"
    ENVELOPE_TOO_LARGE = "envelope_too_large"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SENDER = "wrong_sender"
    NOT_MEMBER = "not_member"
    BAD_RECIPIENTS = "bad_recipients"
    DUPLICATE_MESSAGE = "duplicate_message"
    CLOCK_SKEW = "clock_skew"
    STALE_DEVICE_LIST = "stale_device_list"
    # supervisor grants
    BAD_GRANT = "bad_grant"
    NO_GRANT = "no_grant"
    # legal requests (docs/legal-requests.md)
    WRONG_STATE = "wrong_state"
    EXPORT_TOO_LARGE = "export_too_large"
    # server side
    UNAVAILABLE = "unavailable"
    SLOW_READER = "slow_reader"
    DISPLACED = "displaced"
    BAD_REQUEST = "bad_request"


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    IDLE_TIMEOUT = 4000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013
    PROTOCOL_ERROR = 4400
    AUTH_FAILED = 4401
    AUTH_REQUIRED = 4402
    FORBIDDEN = 4403
    AUTH_TIMEOUT = 4408
    DISPLACED = 4409
    SESSION_ENDED = 4410
    RATE_LIMITED = 4429
    SLOW_READER = 4503


class ProtocolError(SecuremsgError):
    """A peer sent something the protocol does not allow.

    `code` goes on the wire; `close` is set when the connection must end because of it.
    """

    code: ErrorCode = ErrorCode.BAD_FRAME
    close: CloseCode | None = None

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        close: CloseCode | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if close is not None:
            self.close = close

    @property
    def message(self) -> str:
        return str(self.args[0])


class FrameError(ProtocolError):
    """The frame itself is malformed; the connection is closed."""

    code = ErrorCode.BAD_FRAME
    close = CloseCode.PROTOCOL_ERROR


class EnvelopeError(ProtocolError):
    """An envelope failed a structural or policy check; the send is refused, the socket stays."""

    code = ErrorCode.BAD_ENVELOPE
