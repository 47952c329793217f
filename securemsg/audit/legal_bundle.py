"""Legal export bundles: what the server hands over for an approved legal request, signed with
the audit log's key, and the offline check of one.

A bundle is one canonical JSON document `{"bundle": BODY, "signature": NOTE}`. BODY holds the
request, the envelopes in its scope (ciphertext, base64) with their routing metadata, and the
request's audit events as an audit export (a signed checkpoint and an inclusion proof per event).
NOTE is a C2SP signed note whose text names the request and the SHA-256 of BODY's canonical JSON.
`verify_legal_bundle` raises (never returns False); docs/legal-requests.md is the format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securemsg.audit.bundle import BundleReport, verify_bundle
from securemsg.audit.errors import CheckpointError, LogMismatch
from securemsg.audit.events import canonical_json
from securemsg.audit.note import (
    NoteSigner,
    NoteVerifier,
    decode_base64,
    encode_base64,
    open_note,
    sign_note,
)
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from securemsg.protocol.errors import EnvelopeError

FORMAT = "securemsg-legal-export/1"
NOTE_CONTEXT = "securemsg/v1/legal-export"
"""The first line of a bundle's signed note. Its second line is a UUID, never a decimal size,
so the audit key's signature on a bundle can never pass for a checkpoint (or the reverse)."""
AUDIT_FILTER = "legal_request"
"""The audit section's only filter: the request id its events are about."""
REQUIRED_ACTIONS = ("legal.filed", "legal.approved", "legal.exported")
_ENVELOPE_FIELDS = frozenset(
    ("conversation", "message", "sender_device", "sent_ms", "received_ms", "size", "kind", "data")
)
_BODY_FIELDS = frozenset(("format", "request", "exported_ms", "envelopes", "audit"))
_ANY_SIZE = EnvelopeLimits(max_envelope_bytes=2**31, max_recipients=0xFFFF)


def resource(request_id: uuid.UUID) -> str:
    """The `resource` of every audit event about a legal request."""
    return f"legal-request:{request_id}"


@dataclass(frozen=True, slots=True)
class ExportedEnvelope:
    """One stored envelope as handed over: its bytes as received, and its routing metadata."""

    conversation: uuid.UUID
    message_id: bytes
    sender_device: uuid.UUID
    sent_ms: int
    received_ms: int
    kind: str  # "message", or a system event such as "grant"
    data: bytes

    def record(self) -> dict[str, Any]:
        return {
            "conversation": str(self.conversation),
            "message": self.message_id.hex(),
            "sender_device": str(self.sender_device),
            "sent_ms": self.sent_ms,
            "received_ms": self.received_ms,
            "size": len(self.data),
            "kind": self.kind,
            "data": encode_base64(self.data),
        }


def encode_envelopes(envelopes: Iterable[ExportedEnvelope]) -> bytes:
    """The canonical JSON array of envelope records (what the `legal.exported` event digests)."""
    return b"[" + b",".join(canonical_json(e.record()) for e in envelopes) + b"]"


def encode_body(
    request: Mapping[str, Any],
    exported_ms: int,
    envelopes: bytes,
    audit: Sequence[Mapping[str, Any]],
) -> bytes:
    """BODY's canonical JSON, with the envelope array already encoded (it is by far the largest
    part, and is encoded before the export takes the audit lock). Keys in sorted order."""
    parts = [
        b'{"audit":[' + b",".join(canonical_json(r) for r in audit) + b"]",
        b',"envelopes":' + envelopes,
        b',"exported_ms":' + str(exported_ms).encode(),
        b',"format":' + _string(FORMAT),
        b',"request":' + canonical_json(request) + b"}",
    ]
    return b"".join(parts)


def note_text(request_id: uuid.UUID, body_sha256: bytes) -> str:
    return f"{NOTE_CONTEXT}\n{request_id}\n{encode_base64(body_sha256)}\n"


def seal(body: bytes, request_id: uuid.UUID, signers: Sequence[NoteSigner]) -> bytes:
    """The bundle file: BODY and the signed note over its SHA-256, as one canonical JSON line."""
    note = sign_note(note_text(request_id, hashlib.sha256(body).digest()), *signers)
    return b'{"bundle":' + body + b',"signature":' + _string(note) + b"}\n"


def is_legal_bundle(head: bytes) -> bool:
    """Whether a file starting with `head` is a legal export bundle (not an audit export)."""
    return head.lstrip().startswith(b'{"bundle":')


# -- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegalReport:
    request_id: uuid.UUID
    exported_ms: int
    envelopes: int
    signer: str
    audit: BundleReport


def verify_legal_bundle(data: bytes, verifiers: Sequence[NoteVerifier]) -> LegalReport:
    """Check a legal export bundle with nothing but the log's verifier key(s).

    Checks: the signed note by a trusted key over SHA-256 of BODY; the audit section as an audit
    export (checkpoint signature, each event against its leaf, each inclusion proof); that the
    events are this request's and include it being filed, approved by a *different* officer and
    exported, the export event counting and digesting exactly these envelopes; and that each
    envelope's header names the conversation, message id, sender device and time it is listed
    with, inside the request's scope. Raises `CheckpointError` or `LogMismatch`.
    """
    document = _object(_json(data), "bundle file", frozenset(("bundle", "signature")))
    body = _object(document["bundle"], "bundle", _BODY_FIELDS)
    if body["format"] != FORMAT:
        raise LogMismatch(f"bundle format is {str(body['format'])[:40]!r}, want {FORMAT!r}")
    request = _mapping(body["request"], "request")
    request_id = _uuid(request.get("id"), "request id")
    signature = document["signature"]
    if not isinstance(signature, str):
        raise LogMismatch("bundle signature is not a signed note")
    signer = _check_signature(signature, verifiers, canonical_json(body), request_id)
    audit = _list(body["audit"], "audit")
    report = verify_bundle(audit, verifiers)
    header = _mapping(audit[0], "audit checkpoint record")
    if header.get("filters") != {AUDIT_FILTER: str(request_id)}:
        raise LogMismatch("the audit section is not the events of this request")
    envelopes = _list(body["envelopes"], "envelopes")
    exported_ms = body["exported_ms"]
    _check_events(audit[1:-1], request_id, request, exported_ms, envelopes)
    scope = _mapping(request.get("scope"), "request scope")
    for number, record in enumerate(envelopes):
        _check_envelope(number, _object(record, f"envelope {number}", _ENVELOPE_FIELDS), scope)
    return LegalReport(request_id, int(exported_ms), len(envelopes), signer, report)


def _check_signature(
    note: str, verifiers: Sequence[NoteVerifier], body: bytes, request_id: uuid.UUID
) -> str:
    """The name of the trusted key whose signed note names this request and BODY's SHA-256."""
    problem: CheckpointError | None = None
    for verifier in verifiers:
        try:
            text = open_note(note, verifier)
        except CheckpointError as exc:
            problem = exc
            continue
        lines = text.split("\n")
        if len(lines) != 4 or lines[0] != NOTE_CONTEXT or lines[3]:
            raise CheckpointError("the bundle's signed note is not a legal export signature")
        if lines[1] != str(request_id):
            raise LogMismatch("the bundle's signature names another request")
        try:
            digest = decode_base64(lines[2])
        except ValueError:
            raise CheckpointError("the bundle's signed digest is not base64") from None
        if not hmac.compare_digest(digest, hashlib.sha256(body).digest()):
            raise LogMismatch("the bundle's content does not match its signature (SHA-256)")
        return verifier.name
    raise CheckpointError(f"the bundle's signature does not verify: {problem}")


def _check_events(
    records: Sequence[Any],
    request_id: uuid.UUID,
    request: Mapping[str, Any],
    exported_ms: Any,
    envelopes: Sequence[Any],
) -> None:
    events = [_mapping(_mapping(r, "audit record").get("event"), "audit event") for r in records]
    if any(e.get("resource") != resource(request_id) for e in events):
        raise LogMismatch("the audit section holds an event about something else")
    done = {e["action"]: e for e in events if e.get("outcome") == "success" and "action" in e}
    missing = [action for action in REQUIRED_ACTIONS if action not in done]
    if missing:
        raise LogMismatch(f"the audit section lacks the request's {', '.join(missing)} event")
    filed, approved, exported = (done[action] for action in REQUIRED_ACTIONS)
    if filed.get("actor_id") != request.get("filed_by"):
        raise LogMismatch("the filing event's officer is not the request's filer")
    if approved.get("actor_id") != request.get("approved_by"):
        raise LogMismatch("the approval event's officer is not the request's approver")
    if approved.get("actor_id") == filed.get("actor_id"):
        raise LogMismatch("the request was approved by the officer who filed it")
    details = _mapping(exported.get("details"), "export event details")
    digest = encode_base64(hashlib.sha256(_canonical_list(envelopes)).digest())
    if details.get("envelopes") != len(envelopes) or details.get("envelopes_sha256") != digest:
        raise LogMismatch("the envelopes differ from those the export event records")
    if exported.get("time_ms") != exported_ms:
        raise LogMismatch("the bundle's export time differs from the export event's")


def _check_envelope(number: int, record: Mapping[str, Any], scope: Mapping[str, Any]) -> None:
    try:
        data = decode_base64(str(record["data"]))
    except ValueError:
        raise LogMismatch(f"envelope {number} is not base64") from None
    if record["size"] != len(data):
        raise LogMismatch(f"envelope {number} is {len(data)} bytes, listed as {record['size']}")
    received = record["received_ms"]
    if not isinstance(received, int):
        raise LogMismatch(f"envelope {number} has no received time")
    conversation = scope.get("conversation")
    if conversation is not None and record["conversation"] != conversation:
        raise LogMismatch(f"envelope {number} is from a conversation outside the scope")
    low, high = scope.get("from_ms"), scope.get("until_ms")
    if (isinstance(low, int) and received < low) or (isinstance(high, int) and received >= high):
        raise LogMismatch(f"envelope {number} was received outside the scope's time range")
    if record["kind"] != "message":
        return  # a system event (a signed grant record): not in the envelope layout
    try:
        envelope = parse_envelope(data, _ANY_SIZE)
    except EnvelopeError as exc:
        raise LogMismatch(f"envelope {number} is malformed: {exc}") from None
    header = (
        str(uuid.UUID(bytes=envelope.conversation_id)),
        envelope.message_id.hex(),
        str(uuid.UUID(bytes=envelope.sender_device)),
        envelope.timestamp_ms,
    )
    listed = (record["conversation"], record["message"], record["sender_device"], record["sent_ms"])
    if header != listed:
        raise LogMismatch(f"envelope {number}'s routing metadata differs from its header")


# -- small parsing helpers -----------------------------------------------------------------


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LogMismatch("bundle is not JSON") from None


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise LogMismatch(f"{what} is not a JSON object")
    return value


def _object(value: Any, what: str, fields: frozenset[str]) -> Mapping[str, Any]:
    found = _mapping(value, what)
    if set(found) != fields:
        raise LogMismatch(f"{what} does not have exactly the fields {sorted(fields)}")
    return found


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise LogMismatch(f"{what} is not a JSON array")
    return value


def _uuid(value: Any, what: str) -> uuid.UUID:
    try:
        parsed = uuid.UUID(str(value))
    except ValueError:
        raise LogMismatch(f"{what} is not a UUID") from None
    if str(parsed) != value:
        raise LogMismatch(f"{what} is not a UUID in canonical form")
    return parsed


def _string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _canonical_list(values: Sequence[Any]) -> bytes:
    return b"[" + b",".join(canonical_json(v) for v in values) + b"]"
