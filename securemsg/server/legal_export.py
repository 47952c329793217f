"""Building a legal export bundle inside the export's write transaction.

The scope's envelopes are read and encoded first; then the `legal.exported` event is recorded
(it digests exactly those envelopes), the log is integrated up to and including it, and the
bundle gets the request's events with inclusion proofs against that fresh checkpoint, all before
commit: if anything fails, the transaction rolls back and nothing was exported.
audit/legal_bundle.py is the format; docs/legal-requests.md describes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from securemsg.audit.bundle import BundleEvent, BundleHeader, end_record
from securemsg.audit.events import Outcome
from securemsg.audit.integrator import Integrator
from securemsg.audit.legal_bundle import (
    AUDIT_FILTER,
    ExportedEnvelope,
    encode_body,
    encode_envelopes,
    resource,
    seal,
)
from securemsg.audit.note import encode_base64
from securemsg.protocol.errors import ErrorCode
from securemsg.server.legal_calls import Call, LegalRefused, Stores
from securemsg.storage.legal import LegalRequest

_ENVELOPE_OVERHEAD_BYTES = 300  # the JSON around one envelope's base64 in a bundle, at most


@dataclasses.dataclass(frozen=True)
class ExportLimits:
    max_bytes: int
    max_envelopes: int


async def build_bundle(
    stores: Stores,
    call: Call,
    request: LegalRequest,
    integrator: Integrator,
    limits: ExportLimits,
    *,
    now_ms: int,
) -> bytes:
    """The signed bundle of `request`; records `call` (the export event) on the way."""
    count, size = await stores.scope.size(request.scope)
    if count > limits.max_envelopes or _estimate(count, size) > limits.max_bytes:
        raise _too_large(count, size, limits)
    rows = await stores.scope.envelopes(request.scope, limit=limits.max_envelopes)
    envelopes = encode_envelopes(
        ExportedEnvelope(
            r.conversation_id, r.message_id, r.sender_device, r.sent_ms, r.received_ms,
            r.kind, r.data,
        )
        for r in rows
    )  # fmt: skip
    earlier = await stores.scope.events_about(resource(request.id), action_prefix="legal.")
    call.details = {
        "envelopes": len(rows),
        "bytes": sum(len(r.data) for r in rows),
        "envelopes_sha256": encode_base64(hashlib.sha256(envelopes).digest()),
    }
    # From here to commit, appends to the audit log wait for this transaction (PostgreSQL).
    index = await stores.log.record(call.event(Outcome.SUCCESS), now_ms=now_ms)
    call.recorded = True
    checkpoint = await integrator.integrate_within(stores.tree, now_ms=now_ms)
    own = await stores.log.get(index)
    assert own is not None, "an event recorded in this transaction reads back"
    events = [*earlier, own]
    leaves = await stores.tree.leaves_at([e.index for e in events])
    header = BundleHeader(checkpoint.note, checkpoint.size, now_ms, {AUDIT_FILTER: str(request.id)})
    records = [header.record()]
    for event in events:
        proof = await stores.tree.inclusion_proof(event.index, checkpoint.size)
        records.append(
            BundleEvent(event.index, event.fields, event.salt, leaves[event.index], proof).record()
        )
    records.append(end_record(len(events)))
    body = encode_body(request_record(request), now_ms, envelopes, records)
    data = seal(body, request.id, integrator.signers)
    if len(data) > limits.max_bytes:
        raise _too_large(count, size, limits)
    return data


def request_record(request: LegalRequest) -> dict[str, Any]:
    """The `request` object of a bundle: what was asked, by whom, and who approved it."""
    scope = request.scope
    return {
        "id": str(request.id),
        "authority": request.authority,
        "reference": request.reference,
        "legal_basis": request.legal_basis,
        "scope": {
            "account": None if scope.account is None else str(scope.account),
            "conversation": None if scope.conversation is None else str(scope.conversation),
            "from_ms": scope.from_ms,
            "until_ms": scope.until_ms,
        },
        "filed_by": str(request.filed_by),
        "filed_ms": request.filed_ms,
        "approved_by": None if request.decided_by is None else str(request.decided_by),
        "approved_ms": request.decided_ms,
        "decision_note": request.decision_note,
        "notice_after_ms": request.notice_after_ms,
    }


def _estimate(count: int, size: int) -> int:
    """A bound on the bundle bytes the envelopes take: base64 plus their metadata."""
    return (size + 2) // 3 * 4 + count * _ENVELOPE_OVERHEAD_BYTES


def _too_large(count: int, size: int, limits: ExportLimits) -> LegalRefused:
    return LegalRefused(
        f"the scope holds {count} envelopes ({size} bytes of ciphertext), more than one bundle "
        f"may carry ({limits.max_envelopes} envelopes, {limits.max_bytes} bytes); "
        "narrow the scope's time range",
        code=ErrorCode.EXPORT_TOO_LARGE,
    )
