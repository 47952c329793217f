"""Legal requests: filing, dual-control decisions, the signed export bundle, downloads, closing,
and the accounting of disclosures each client can read. A plain async service with time passed
in; server/legal_http.py is its edge and docs/legal-requests.md its specification.

A request moves only along `TRANSITIONS`, and the officer who filed it can never approve or deny
it. Every call is audited through `legal_calls.Audited` (compliance role only; a success in the
transaction of its change, fail-closed; a refusal in its own).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import uuid
from datetime import UTC, datetime

from securemsg.audit.events import AuditAction, Detail, Outcome
from securemsg.audit.integrator import Integrator
from securemsg.audit.legal_bundle import resource
from securemsg.protocol.errors import ErrorCode
from securemsg.server.legal_calls import (
    Audited,
    Call,
    LegalRefused,
    Officer,
    Stores,
    T,
    Work,
    bad_request,
    check_field,
    check_time,
    scope_subject,
)
from securemsg.server.legal_export import ExportLimits, build_bundle
from securemsg.settings import Settings
from securemsg.storage.database import Database
from securemsg.storage.legal import LegalRequest, LegalRequestStore, Scope, Status

PURPOSE = "legal request"


class Step(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    EXPORT = "export"
    CLOSE = "close"


TRANSITIONS: dict[Step, tuple[frozenset[Status], Status]] = {
    Step.APPROVE: (frozenset({Status.FILED}), Status.APPROVED),
    Step.DENY: (frozenset({Status.FILED}), Status.DENIED),
    Step.EXPORT: (frozenset({Status.APPROVED}), Status.EXPORTED),
    Step.CLOSE: (
        frozenset({Status.FILED, Status.APPROVED, Status.DENIED, Status.EXPORTED}),
        Status.CLOSED,
    ),
}
"""step -> (the states it may start from, the state it leads to). Filing creates a request in
`filed`; a download needs `exported` and changes nothing; `closed` is final and deletes the
bundle."""


@dataclasses.dataclass(frozen=True)
class NewRequest:
    authority: str
    reference: str
    legal_basis: str
    scope: Scope
    notice_after_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A downloaded export: the bundle file's bytes."""

    request: LegalRequest
    data: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()


@dataclasses.dataclass(frozen=True)
class Disclosure:
    """One entry of an accounting of disclosures (HIPAA §164.528)."""

    request_id: uuid.UUID
    date_ms: int
    recipient: str
    description: str
    purpose: str


class LegalService:
    def __init__(self, database: Database, settings: Settings, integrator: Integrator) -> None:
        self.database = database
        self.settings = settings
        self.integrator = integrator
        self.audited = Audited(database)
        self.limits = ExportLimits(
            max_bytes=settings.legal_max_export_bytes,
            max_envelopes=settings.legal_max_export_envelopes,
        )

    async def file(self, officer: Officer, new: NewRequest, *, now_ms: int) -> LegalRequest:
        """File a request (state `filed`); another officer must approve it."""

        async def work(stores: Stores, call: Call) -> LegalRequest:
            self._check_new(new)
            call.subject = await scope_subject(stores.scope, new.scope)
            request = LegalRequest(
                id=uuid.uuid4(),
                status=Status.FILED,
                filed_by=officer.account_id,
                filed_ms=now_ms,
                authority=new.authority,
                reference=new.reference,
                legal_basis=new.legal_basis,
                scope=new.scope,
                notice_after_ms=new.notice_after_ms,
            )
            await stores.requests.insert(request)
            call.resource = resource(request.id)
            call.details = _request_details(request)
            return request

        return await self._run(officer, AuditAction.LEGAL_FILED, None, work, now_ms)

    async def get(self, officer: Officer, request_id: uuid.UUID, *, now_ms: int) -> LegalRequest:
        async def work(stores: Stores, call: Call) -> LegalRequest:
            return await _existing(stores, request_id)

        return await self._run(officer, AuditAction.LEGAL_READ, request_id, work, now_ms)

    async def page(
        self,
        officer: Officer,
        *,
        status: Status | None,
        after: uuid.UUID | None,
        limit: int,
        now_ms: int,
    ) -> tuple[list[LegalRequest], uuid.UUID | None]:
        """Requests, newest first, after the one named by the cursor `after`; and the next
        cursor (None on the last page)."""
        limit = max(1, min(limit, self.settings.legal_max_page_items))

        async def work(stores: Stores, call: Call) -> tuple[list[LegalRequest], uuid.UUID | None]:
            before = None if after is None else await _existing(stores, after)
            found = await stores.requests.page(status=status, before=before, limit=limit + 1)
            call.details = {"returned": len(found[:limit])}
            if status is not None:
                call.details["status"] = status.value
            return found[:limit], found[limit - 1].id if len(found) > limit else None

        return await self._run(officer, AuditAction.LEGAL_READ, None, work, now_ms)

    async def decide(
        self,
        officer: Officer,
        request_id: uuid.UUID,
        *,
        approve: bool,
        note: str | None,
        now_ms: int,
    ) -> LegalRequest:
        """Approve or deny a filed request: any compliance officer but its filer may."""
        step = Step.APPROVE if approve else Step.DENY

        async def work(stores: Stores, call: Call) -> LegalRequest:
            if note is not None:
                check_field("note", note, self.settings.legal_max_text_chars)
            request = await _existing(stores, request_id, for_update=True)
            call.subject = await scope_subject(stores.scope, request.scope)
            if request.filed_by == officer.account_id:
                raise LegalRefused(
                    "the officer who filed a legal request cannot approve or deny it: "
                    "a second compliance officer must (dual control)",
                    outcome=Outcome.DENIED,
                    reason="dual_control",
                )
            decided = dataclasses.replace(
                request,
                status=TRANSITIONS[step][1],
                decided_by=officer.account_id,
                decided_ms=now_ms,
                decision_note=note,
            )
            changed = {"decided_by": officer.account_id, "decided_ms": now_ms}
            await _move(stores, request, step, {**changed, "decision_note": note})
            if note is not None:
                call.details = {"note": note}
            return decided

        action = AuditAction.LEGAL_APPROVED if approve else AuditAction.LEGAL_DENIED
        return await self._run(officer, action, request_id, work, now_ms)

    async def export(self, officer: Officer, request_id: uuid.UUID, *, now_ms: int) -> LegalRequest:
        """Build, sign and store the bundle of an approved request (state `exported`)."""

        async def work(stores: Stores, call: Call) -> LegalRequest:
            request = await _existing(stores, request_id, for_update=True)
            call.subject = await scope_subject(stores.scope, request.scope)
            check_state(request, Step.EXPORT)
            data = await build_bundle(
                stores, call, request, self.integrator, self.limits, now_ms=now_ms
            )
            digest = hashlib.sha256(data).digest()
            changed = {"exported_ms": now_ms, "bundle": data, "bundle_sha256": digest}
            await _move(stores, request, Step.EXPORT, changed)
            return dataclasses.replace(
                request, status=Status.EXPORTED, exported_ms=now_ms, bundle_sha256=digest
            )

        return await self._run(officer, AuditAction.LEGAL_EXPORTED, request_id, work, now_ms)

    async def download(self, officer: Officer, request_id: uuid.UUID, *, now_ms: int) -> Bundle:
        """The stored bundle of an exported request; every download is recorded."""

        async def work(stores: Stores, call: Call) -> Bundle:
            request = await _existing(stores, request_id)
            call.subject = await scope_subject(stores.scope, request.scope)
            data = await stores.requests.bundle(request_id)
            if request.status is not Status.EXPORTED or data is None:
                raise LegalRefused(
                    f"request is {request.status}: only an exported request has a bundle",
                    code=ErrorCode.WRONG_STATE,
                )
            call.details = {"bundle_sha256": hashlib.sha256(data).hexdigest()}
            return Bundle(request, data)

        return await self._run(officer, AuditAction.LEGAL_DOWNLOADED, request_id, work, now_ms)

    async def close(self, officer: Officer, request_id: uuid.UUID, *, now_ms: int) -> LegalRequest:
        """Close a request for good; an exported bundle is deleted (its SHA-256 is kept)."""

        async def work(stores: Stores, call: Call) -> LegalRequest:
            request = await _existing(stores, request_id, for_update=True)
            call.subject = await scope_subject(stores.scope, request.scope)
            call.details = {"from": request.status.value}
            await _move(stores, request, Step.CLOSE, {"closed_ms": now_ms, "bundle": None})
            return dataclasses.replace(request, status=Status.CLOSED, closed_ms=now_ms)

        return await self._run(officer, AuditAction.LEGAL_CLOSED, request_id, work, now_ms)

    async def disclosures(self, account_id: uuid.UUID, *, now_ms: int) -> list[Disclosure]:
        """The accounting of disclosures of one account: each export whose scope covers it,
        once its notice delay (if any) has passed. Newest first."""
        async with self.database.read() as conn:
            found = await LegalRequestStore(conn).disclosed_to(
                account_id, now_ms=now_ms, limit=self.settings.max_disclosures
            )
        return [
            Disclosure(r.id, r.exported_ms or r.filed_ms, r.authority, describe(r), r.legal_basis)
            for r in found
        ]

    async def authorize(
        self, officer: Officer, action: AuditAction, request_id: uuid.UUID | None, *, now_ms: int
    ) -> None:
        """Refuse (and record) a caller without the compliance role, before anything else."""
        await self.audited.authorize(self._call(officer, action, request_id), now_ms=now_ms)

    def _call(self, officer: Officer, action: AuditAction, request_id: uuid.UUID | None) -> Call:
        return Call(officer, action, PURPOSE, None if request_id is None else resource(request_id))

    async def _run(
        self,
        officer: Officer,
        action: AuditAction,
        request_id: uuid.UUID | None,
        work: Work[T],
        now_ms: int,
    ) -> T:
        return await self.audited.run(self._call(officer, action, request_id), work, now_ms=now_ms)

    def _check_new(self, new: NewRequest) -> None:
        name_chars = self.settings.legal_max_name_chars
        check_field("authority", new.authority, name_chars)
        check_field("reference", new.reference, name_chars)
        check_field("legal_basis", new.legal_basis, self.settings.legal_max_text_chars)
        scope = new.scope
        if scope.account is None and scope.conversation is None:
            raise bad_request("a scope names an account, a conversation, or both")
        check_time("notice_after_ms", new.notice_after_ms)
        check_time("from_ms", scope.from_ms)
        check_time("until_ms", scope.until_ms)
        low, high = scope.from_ms, scope.until_ms
        if low is not None and high is not None and low >= high:
            raise bad_request("the scope's from_ms must be before its until_ms")


def check_state(request: LegalRequest, step: Step) -> None:
    """Refuse (`wrong_state`) a step the request's state does not allow."""
    allowed, _ = TRANSITIONS[step]
    if request.status not in allowed:
        states = " or ".join(sorted(allowed))
        raise LegalRefused(
            f"request is {request.status}: only a request that is {states} can {step}",
            code=ErrorCode.WRONG_STATE,
        )


async def _move(
    stores: Stores, request: LegalRequest, step: Step, values: dict[str, object]
) -> None:
    check_state(request, step)
    allowed, target = TRANSITIONS[step]
    if not await stores.requests.transition(request.id, sorted(allowed), target, **values):
        raise LegalRefused("the request changed meanwhile; reload it", code=ErrorCode.WRONG_STATE)


async def _existing(
    stores: Stores, request_id: uuid.UUID, *, for_update: bool = False
) -> LegalRequest:
    request = await stores.requests.get(request_id, for_update=for_update)
    if request is None:
        raise LegalRefused(f"no legal request {request_id}", code=ErrorCode.NOT_FOUND)
    return request


def _request_details(request: LegalRequest) -> dict[str, Detail]:
    scope = request.scope
    details: dict[str, Detail] = {
        "authority": request.authority,
        "reference": request.reference,
        "legal_basis": request.legal_basis,
    }
    optional: dict[str, Detail] = {
        "scope_account": None if scope.account is None else str(scope.account),
        "scope_conversation": None if scope.conversation is None else str(scope.conversation),
        "scope_from_ms": scope.from_ms,
        "scope_until_ms": scope.until_ms,
        "notice_after_ms": request.notice_after_ms,
    }
    details.update({k: v for k, v in optional.items() if v is not None})
    return details


def describe(request: LegalRequest) -> str:
    """What an export handed over, in words for the person it concerns."""
    scope = request.scope
    what = []
    if scope.conversation is not None:
        what.append(f"conversation {scope.conversation}")
    if scope.account is not None:
        what.append(f"the conversations of account {scope.account}")
    period = ""
    if scope.from_ms is not None:
        period += f", received from {_moment(scope.from_ms)}"
    if scope.until_ms is not None:
        period += f", received before {_moment(scope.until_ms)}"
    return (
        "encrypted messages (ciphertext the server cannot read) and their routing metadata "
        f"(conversation, sender device, times, sizes) of {' within '.join(what)}{period}; "
        f"reference {request.reference}"
    )


def _moment(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
