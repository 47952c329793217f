"""Audit events, their canonical bytes, and the leaf that commits to each one.

An event is the readable record kept in SQL: who (actor, role), what (action, resource), which
subject, when, why (purpose), outcome and where (address, request id). The tree holds only its
*leaf*: pseudonymous ids, action, purpose, time, outcome and a salted SHA-256 commitment to the
event's canonical bytes, so the readable event can be pruned later without breaking the tree.
Both encodings are canonical JSON (RFC 8785 for the values allowed here); docs/audit.md has both.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from securemsg.audit.merkle import HASH_BYTES
from securemsg.audit.note import decode_base64, encode_base64

EVENT_VERSION = 1
COMMITMENT_PREFIX = b"securemsg/v1/audit-event\n"
"""Domain separation: a commitment can't be mistaken for any other SHA-256 securemsg computes."""
SALT_BYTES = 16

OPERATOR_ROLE = "operator"
"""The role recorded for someone acting through the `securemsg` CLI, outside any account."""

MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 200
MAX_DETAILS_BYTES = 4096
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers are not exact

_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,47}")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\ud800-\udfff]")

Detail = str | int | bool | None | tuple[str, ...]


class AuditAction(enum.StrEnum):
    """What happened. Stored and queried as the string; new issues add members."""

    LOGIN = "login"
    LOGIN_FAILED = "login.failed"
    LOGIN_LOCKED = "login.locked"
    LOGOUT = "session.logout"
    SESSIONS_REVOKED = "account.sessions_revoked"
    ACCOUNT_CREATED = "account.created"
    ACCOUNT_DISABLED = "account.disabled"
    ACCOUNT_ENABLED = "account.enabled"
    CONVERSATION_CREATED = "conversation.created"
    DEVICES_PUBLISHED = "devices.published"
    AUDIT_QUERY = "audit.query"
    AUDIT_EVENT = "audit.event"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_CONSISTENCY = "audit.consistency"
    AUDIT_EXPORT = "audit.export"
    # legal requests, holds and retention (docs/legal-requests.md)
    LEGAL_FILED = "legal.filed"
    LEGAL_APPROVED = "legal.approved"
    LEGAL_DENIED = "legal.denied"
    LEGAL_EXPORTED = "legal.exported"
    LEGAL_DOWNLOADED = "legal.downloaded"
    LEGAL_CLOSED = "legal.closed"
    LEGAL_READ = "legal.read"
    HOLD_PLACED = "legal.hold_placed"
    HOLD_RELEASED = "legal.hold_released"
    RETENTION_DELETED = "retention.deleted"
    ACCOUNT_DELETED = "account.deleted"
    SUPERVISOR_GRANT = "supervisor.grant"
    SUPERVISOR_REVOKE = "supervisor.revoke"
    SUPERVISOR_READ = "supervisor.read"
    SUPERVISOR_HISTORY = "supervisor.history"
    SUPERVISOR_KEY_SHARES = "supervisor.key_shares"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


def clean_text(value: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Make untrusted text (an attempted username, a request id) fit an event field.

    Control characters, line separators and lone surrogates become U+FFFD; long text is cut.
    """
    return _UNSAFE_CHARS.sub("\ufffd", value)[:max_chars]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: an account (id, username, role), an attempted username, or the CLI operator."""

    id: uuid.UUID | None = None
    name: str | None = None
    role: str | None = None

    @classmethod
    def operator(cls, name: str | None = None) -> Actor:
        return cls(None, None if name is None else clean_text(name, MAX_NAME_CHARS), OPERATOR_ROLE)


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose data or account the event concerns (for most events, a client's account)."""

    id: uuid.UUID | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Where the request came from."""

    address: str | None = None
    request_id: str | None = None


CLI_SOURCE = Source(address="cli")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited happening, without its time (`AuditLog.record` stamps `now_ms`).

    Text fields are None or non-empty; `details` holds small extra facts (counts, ids, a
    failure reason) and never a secret: no password, token or message content.
    """

    action: str
    outcome: str
    actor: Actor = field(default_factory=Actor)
    subject: Subject = field(default_factory=Subject)
    resource: str | None = None
    purpose: str | None = None
    source: Source = field(default_factory=Source)
    details: Mapping[str, Detail] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ACTION.fullmatch(self.action) or len(self.action) > 48:
            raise ValueError(f"audit action {self.action[:60]!r} is not dotted lower-case words")
        Outcome(self.outcome)
        for name, value, limit in (
            ("actor name", self.actor.name, MAX_NAME_CHARS),
            ("actor role", self.actor.role, 16),
            ("subject name", self.subject.name, MAX_NAME_CHARS),
            ("resource", self.resource, MAX_TEXT_CHARS),
            ("purpose", self.purpose, MAX_TEXT_CHARS),
            ("address", self.source.address, MAX_NAME_CHARS),
            ("request id", self.source.request_id, MAX_NAME_CHARS),
        ):
            check_text(name, value, limit)
        _check_details(self.details)

    def fields(self, time_ms: int) -> dict[str, Any]:
        """The event as the flat JSON object that is committed to (and exported)."""
        if not 0 <= time_ms <= MAX_SAFE_INTEGER:
            raise ValueError(f"event time {time_ms} is outside 0..2**53-1")
        return {
            "v": EVENT_VERSION,
            "time_ms": time_ms,
            "action": str(self.action),
            "outcome": str(self.outcome),
            "actor_id": _uuid_text(self.actor.id),
            "actor_name": self.actor.name,
            "actor_role": self.actor.role,
            "subject_id": _uuid_text(self.subject.id),
            "subject_name": self.subject.name,
            "resource": self.resource,
            "purpose": self.purpose,
            "address": self.source.address,
            "request_id": self.source.request_id,
            "details": _plain(self.details),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> tuple[int, AuditEvent]:
        """Read an event object back (from SQL columns or an export): (time_ms, event).

        Raises ValueError on anything `fields` would not have produced.
        """
        if set(fields) != EVENT_FIELDS:
            raise ValueError(f"event fields {sorted(fields)} are not {sorted(EVENT_FIELDS)}")
        if fields["v"] != EVENT_VERSION:
            raise ValueError(f"event version {fields['v']!r}, want {EVENT_VERSION}")
        time_ms = fields["time_ms"]
        if not isinstance(time_ms, int) or isinstance(time_ms, bool):
            raise ValueError("event time_ms is not an integer")
        details = fields["details"]
        if not isinstance(details, Mapping):
            raise ValueError("event details is not an object")
        event = cls(
            action=_str(fields["action"]),
            outcome=_str(fields["outcome"]),
            actor=Actor(
                _uuid(fields["actor_id"]),
                _opt_str(fields["actor_name"]),
                _opt_str(fields["actor_role"]),
            ),
            subject=Subject(_uuid(fields["subject_id"]), _opt_str(fields["subject_name"])),
            resource=_opt_str(fields["resource"]),
            purpose=_opt_str(fields["purpose"]),
            source=Source(_opt_str(fields["address"]), _opt_str(fields["request_id"])),
            details={k: tuple(v) if isinstance(v, list) else v for k, v in details.items()},
        )
        return time_ms, event


EVENT_FIELDS = frozenset(
    (
        "v",
        "time_ms",
        "action",
        "outcome",
        "actor_id",
        "actor_name",
        "actor_role",
        "subject_id",
        "subject_name",
        "resource",
        "purpose",
        "address",
        "request_id",
        "details",
    )
)
LEAF_FIELDS = frozenset(
    ("v", "time_ms", "action", "outcome", "actor_id", "subject_id", "purpose", "commitment")
)


_CANONICAL = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON for objects of strings, safe integers, booleans, null and lists."""
    return _CANONICAL.encode(value).encode("utf-8")


def commitment(salt: bytes, event_bytes: bytes) -> bytes:
    """SHA-256(b"securemsg/v1/audit-event\\n" || salt || canonical event bytes)."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"audit salt of {len(salt)} bytes, want {SALT_BYTES}")
    return sha256(COMMITMENT_PREFIX + salt + event_bytes).digest()


def leaf_fields(event_fields: Mapping[str, Any], event_commitment: bytes) -> dict[str, Any]:
    """The leaf object of an event object: the pseudonymous part plus the commitment."""
    return {
        "v": EVENT_VERSION,
        "time_ms": event_fields["time_ms"],
        "action": event_fields["action"],
        "outcome": event_fields["outcome"],
        "actor_id": event_fields["actor_id"],
        "subject_id": event_fields["subject_id"],
        "purpose": event_fields["purpose"],
        "commitment": encode_base64(event_commitment),
    }


@dataclass(frozen=True, slots=True)
class SealedEvent:
    """An event at a time, with its salt: everything needed for its row, leaf and checks."""

    time_ms: int
    event: AuditEvent
    salt: bytes

    @property
    def event_bytes(self) -> bytes:
        return canonical_json(self.event.fields(self.time_ms))

    @property
    def leaf(self) -> bytes:
        """The leaf bytes the tree hashes (RFC 6962 leaf data)."""
        fields = self.event.fields(self.time_ms)
        return canonical_json(leaf_fields(fields, commitment(self.salt, canonical_json(fields))))


def expected_leaf(event_fields: Mapping[str, Any], salt: bytes) -> bytes:
    """The only leaf consistent with this event object and salt (a verifier compares bytes)."""
    return canonical_json(leaf_fields(event_fields, commitment(salt, canonical_json(event_fields))))


def check_leaf(leaf: bytes) -> dict[str, Any]:
    """Parse leaf bytes, checking they are the canonical encoding of a well-formed leaf."""
    try:
        value = json.loads(leaf)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("leaf is not JSON") from None
    if not isinstance(value, dict) or set(value) != LEAF_FIELDS:
        raise ValueError("leaf does not have exactly the leaf fields")
    if canonical_json(value) != leaf:
        raise ValueError("leaf is not in canonical form")
    if value["v"] != EVENT_VERSION:
        raise ValueError(f"leaf version {value['v']!r}, want {EVENT_VERSION}")
    return value


def same_commitment(leaf: Mapping[str, Any], value: bytes) -> bool:
    try:
        stored = decode_base64(_str(leaf["commitment"]))
    except ValueError:
        return False
    return len(stored) == HASH_BYTES and hmac.compare_digest(stored, value)


def check_text(name: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"audit {name} must be None or a non-empty string")
    if len(value) > limit:
        raise ValueError(f"audit {name} of {len(value)} characters exceeds {limit}")
    if _UNSAFE_CHARS.search(value):
        raise ValueError(f"audit {name} contains a control character or lone surrogate")


def _check_details(details: Mapping[str, Detail]) -> None:
    for key, value in details.items():
        if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
            raise ValueError(f"audit detail key {str(key)[:60]!r} is not a lower-case word")
        items: Sequence[object] = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, bool) or item is None:
                continue
            if isinstance(item, int):
                if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    raise ValueError(f"audit detail {key} is outside ±(2**53-1)")
            elif isinstance(item, str):
                check_text(f"detail {key}", item, 1024)
            else:
                raise ValueError(f"audit detail {key} has a {type(item).__name__}")
    size = len(canonical_json(_plain(details)))
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details of {size} bytes exceed {MAX_DETAILS_BYTES}")


def _uuid_text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    text = _str(value)
    parsed = uuid.UUID(text)
    if str(parsed) != text:
        raise ValueError(f"uuid {text[:40]!r} is not in canonical form")
    return parsed


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _plain(details: Mapping[str, Detail]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in details.items()}
