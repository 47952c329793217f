"""WebSocket frames: JSON text messages with a `type`, parsed into typed dataclasses.

`parse_frame` is the only way bytes from a peer become a frame; it enforces the size, depth and
number limits before anything else looks at the content, and raises FrameError (connection ends)
for anything malformed. `encode` turns server or client frames back into text. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import uuid
from typing import Any, ClassVar

from securemsg.protocol.errors import CloseCode, ErrorCode, FrameError

_MAX_INT_DIGITS = 19  # fits in a signed 64-bit integer
_B64_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


@dataclasses.dataclass(frozen=True)
class FrameLimits:
    max_frame_bytes: int = 131072
    max_json_depth: int = 4


# --- frames a client sends -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Auth:
    type: ClassVar[str] = "auth"
    token: str


@dataclasses.dataclass(frozen=True)
class Ping:
    type: ClassVar[str] = "ping"


@dataclasses.dataclass(frozen=True)
class Attach:
    """Bind this socket to one of the account's devices, proven by signing the challenge."""

    type: ClassVar[str] = "attach"
    device: uuid.UUID
    signature: bytes
    after: int | None  # resume after this sequence number; None: after the last acknowledged


@dataclasses.dataclass(frozen=True)
class Send:
    type: ClassVar[str] = "send"
    envelope: bytes


@dataclasses.dataclass(frozen=True)
class Ack:
    """Cumulative: every sequence number up to and including `seq` was processed."""

    type: ClassVar[str] = "ack"
    seq: int


ClientFrame = Auth | Ping | Attach | Send | Ack

_CLIENT_FIELDS: dict[str, tuple[type[Any], dict[str, tuple[str, bool]]]] = {
    # type -> (class, {field: (kind, required)})
    "auth": (Auth, {"token": ("str", True)}),
    "ping": (Ping, {}),
    "attach": (
        Attach,
        {"device": ("uuid", True), "signature": ("b64", True), "after": ("uint", False)},
    ),
    "send": (Send, {"envelope": ("b64", True)}),
    "ack": (Ack, {"seq": ("uint", True)}),
}


def parse_frame(data: str | bytes, limits: FrameLimits) -> ClientFrame:
    """Parse one client frame or raise FrameError with a stable code."""
    if isinstance(data, bytes):
        raise FrameError("binary frames are not accepted; send JSON text", code=ErrorCode.BAD_FRAME)
    size = len(data.encode("utf-8", "surrogatepass")) if not data.isascii() else len(data)
    if size > limits.max_frame_bytes:
        raise FrameError(
            f"frame of {size} bytes exceeds the {limits.max_frame_bytes}-byte limit",
            code=ErrorCode.FRAME_TOO_LARGE,
            close=CloseCode.MESSAGE_TOO_BIG,
        )
    obj = loads_json(data, limits)
    if not isinstance(obj, dict):
        raise FrameError("a frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError("a frame needs a string 'type'")
    spec = _CLIENT_FIELDS.get(kind)
    if spec is None:
        raise FrameError(f"unknown frame type {kind[:32]!r}", code=ErrorCode.UNKNOWN_TYPE)
    cls, fields = spec
    unknown = set(obj) - set(fields) - {"type"}
    if unknown:
        name = sorted(unknown)[0][:32]
        raise FrameError(f"{kind} frame has unknown field {name!r}")
    values = {
        name: _field(kind, name, obj.get(name), kind_, required)
        for name, (kind_, required) in fields.items()
    }
    frame: ClientFrame = cls(**values)
    return frame


def loads_json(data: str, limits: FrameLimits) -> Any:
    """json.loads with the depth and number limits; raises FrameError."""
    try:
        obj = json.loads(
            data, parse_int=_parse_int, parse_float=_reject_float, parse_constant=_reject_constant
        )
    except RecursionError:
        raise FrameError("JSON nesting is too deep", code=ErrorCode.TOO_DEEP) from None
    except FrameError:
        raise
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise FrameError(f"malformed JSON: {str(exc)[:80]}", code=ErrorCode.BAD_JSON) from None
    if _depth(obj) > limits.max_json_depth:
        raise FrameError(
            f"JSON nesting exceeds the depth limit of {limits.max_json_depth}",
            code=ErrorCode.TOO_DEEP,
        )
    return obj


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise FrameError(f"number of {digits} digits is out of range", code=ErrorCode.BAD_FRAME)
    return int(text)


def _reject_float(text: str) -> float:
    raise FrameError("numbers in frames must be integers", code=ErrorCode.BAD_FRAME)


def _reject_constant(text: str) -> Any:
    raise FrameError(f"{text} is not valid JSON", code=ErrorCode.BAD_JSON)


def _depth(obj: Any) -> int:
    depth = 0
    level = [obj]
    while level:
        depth += 1
        nested: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                nested.extend(v for v in item if isinstance(v, dict | list))
        if not nested:
            return depth
        level = nested
    return depth


def _field(kind: str, name: str, value: Any, field_kind: str, required: bool) -> Any:
    if value is None:
        if required:
            raise FrameError(f"{kind} frame needs {name!r}")
        return None
    if field_kind == "str":
        if not isinstance(value, str):
            raise FrameError(f"{kind}.{name} must be a string")
        return value
    if field_kind == "uint":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**63:
            raise FrameError(f"{kind}.{name} must be a non-negative 64-bit integer")
        return value
    if field_kind == "uuid":
        if not isinstance(value, str) or len(value) != 36:
            raise FrameError(f"{kind}.{name} must be a UUID string")
        try:
            return uuid.UUID(value)
        except ValueError:
            raise FrameError(f"{kind}.{name} must be a UUID string") from None
    if field_kind == "b64":
        if not isinstance(value, str):
            raise FrameError(f"{kind}.{name} must be a base64 string", code=ErrorCode.BAD_BASE64)
        return decode_b64(value, what=f"{kind}.{name}")
    raise AssertionError(field_kind)


def decode_b64(value: str, *, what: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if len(raw) % 4 or not _B64_RE.fullmatch(raw):
        raise FrameError(f"{what} is not valid base64", code=ErrorCode.BAD_BASE64)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(f"{what} is not valid base64", code=ErrorCode.BAD_BASE64) from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- frames the server sends -----------------------------------------------------------------


def encode(frame_type: str, /, **fields: Any) -> str:
    """Encode a frame: `encode("pong")`, `encode("deliver", seq=3, envelope=b64(raw))`."""
    return json.dumps({"type": frame_type, **fields}, separators=(",", ":"))


def deliver_frame(seq: int, data: bytes, kind: str = "message") -> str:
    """`encode("deliver", seq=seq, envelope=b64(data))` (plus `kind` unless "message").

    Formatted directly, not through json.dumps: this is the hot path, and every field is an
    integer or base64 text, which need no escaping (`kind`, rare, still goes through json).
    """
    if kind == "message":
        return f'{{"type":"deliver","seq":{seq:d},"envelope":"{b64(data)}"}}'
    return f'{{"type":"deliver","seq":{seq:d},"envelope":"{b64(data)}","kind":{json.dumps(kind)}}}'


def accepted_frame(conversation: uuid.UUID, message_id: bytes, received_ms: int) -> str:
    """`encode("accepted", conversation=..., message=<hex>, received_ms=...)`, directly."""
    return (
        f'{{"type":"accepted","conversation":"{conversation}","message":"{message_id.hex()}",'
        f'"received_ms":{received_ms:d}}}'
    )


def error_frame(code: ErrorCode, message: str, **extra: Any) -> str:
    return encode("error", code=code.value, message=message, **extra)


def encode_client(frame: ClientFrame) -> str:
    """Encode a client frame (used by the SDK and tests)."""
    if isinstance(frame, Auth):
        return encode("auth", token=frame.token)
    if isinstance(frame, Ping):
        return encode("ping")
    if isinstance(frame, Attach):
        fields: dict[str, Any] = {"device": str(frame.device), "signature": b64(frame.signature)}
        if frame.after is not None:
            fields["after"] = frame.after
        return encode("attach", **fields)
    if isinstance(frame, Send):
        return encode("send", envelope=b64(frame.envelope))
    return encode("ack", seq=frame.seq)


def parse_server_frame(data: str | bytes, limits: FrameLimits) -> dict[str, Any]:
    """Parse a server frame loosely (for the SDK): a JSON object with a string `type`."""
    if isinstance(data, bytes):
        raise FrameError("server sent a binary frame")
    if len(data) > limits.max_frame_bytes * 2:
        raise FrameError("server frame too large", code=ErrorCode.FRAME_TOO_LARGE)
    obj = loads_json(data, FrameLimits(limits.max_frame_bytes * 2, max(limits.max_json_depth, 4)))
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise FrameError("server frame must be an object with a string 'type'")
    return obj


ATTACH_PURPOSE = b"securemsg/v1/attach"


def attach_message(challenge: bytes, device: uuid.UUID) -> bytes:
    """What a device signs to attach: purpose, the server's one-time challenge, its own id."""
    return ATTACH_PURPOSE + b"\x00" + challenge + device.bytes
