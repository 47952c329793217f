"""Compliance access to the audit log: queries, one event with its proof, checkpoints,
consistency proofs and export bundles, for the `compliance` role only, every call audited.

Each call records its own event in the same write transaction as the read it makes (fail-closed:
no record, no answer). A caller of another role is refused with `ComplianceRefused`, and that
refusal is recorded and committed first. The HTTP routes (server/compliance.py) and the CLI
(cli_audit.py) are thin adapters over this service.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from securemsg.audit.bundle import (
    BundleEvent,
    BundleHeader,
    csv_header,
    csv_line,
    end_record,
    ndjson_line,
)
from securemsg.audit.events import (
    Actor,
    AuditAction,
    AuditEvent,
    Detail,
    Outcome,
    Source,
    Subject,
    check_text,
)
from securemsg.audit.merkle import inclusion_plan
from securemsg.protocol.errors import ErrorCode, ProtocolError
from securemsg.storage.audit import AuditLog, EventFilter, StoredEvent
from securemsg.storage.audit_tree import AuditTree, StoredCheckpoint
from securemsg.storage.database import Database

COMPLIANCE_ROLE = "compliance"
DEFAULT_REASON = "compliance review"
ExportFormat = Literal["ndjson", "csv"]

T = TypeVar("T")
Work = Callable[[AuditLog, AuditTree], Awaitable[tuple[T, dict[str, Detail], Subject | None]]]
"""What an audited call reads: its result, details for its event, and the subject it found."""


class ComplianceRefused(ProtocolError):
    """The caller may not do this (`forbidden`), asked for nothing (`not_found`), or asked
    badly (`bad_request`)."""

    code = ErrorCode.FORBIDDEN


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is asking, from where, and why (the `purpose` of the event their call records)."""

    actor: Actor
    source: Source = dataclasses.field(default_factory=Source)
    reason: str = DEFAULT_REASON


@dataclasses.dataclass(frozen=True)
class EventPage:
    events: list[StoredEvent]
    next_cursor: int | None
    checkpoint_size: int


@dataclasses.dataclass(frozen=True)
class EventProof:
    """One event, its leaf, and its inclusion proof at `size` (None while not yet signed)."""

    event: StoredEvent
    leaf: bytes
    size: int
    proof: list[bytes] | None
    checkpoint: StoredCheckpoint | None


@dataclasses.dataclass(frozen=True)
class Consistency:
    first: int
    second: int
    proof: list[bytes]
    checkpoint: StoredCheckpoint | None


@dataclasses.dataclass(frozen=True)
class Export:
    header: BundleHeader
    format: ExportFormat
    chunks: AsyncIterator[str]


class ComplianceService:
    def __init__(
        self,
        database: Database,
        *,
        roles: frozenset[str] = frozenset({COMPLIANCE_ROLE}),
        max_page_events: int = 1000,
        export_batch: int = 256,
    ) -> None:
        self.database = database
        self.roles = roles
        self.max_page_events = max(1, max_page_events)
        self.export_batch = export_batch

    async def authorize(self, caller: Caller, action: AuditAction, *, now_ms: int) -> None:
        """Refuse, and record the refusal, unless the caller's role may use the audit log."""
        if caller.actor.role not in self.roles:
            await self._audited(caller, action, _never, now_ms)

    async def query(
        self, caller: Caller, where: EventFilter, *, after: int | None, limit: int, now_ms: int
    ) -> EventPage:
        """A page of events matching `where`, by index, after the cursor `after`."""
        limit = max(1, min(limit, self.max_page_events))

        async def work(log: AuditLog, tree: AuditTree) -> tuple[EventPage, dict[str, Detail], None]:
            found = await log.page(where, after=after, limit=limit + 1)
            latest = await tree.latest_checkpoint()
            events = found[:limit]
            cursor = events[-1].index if len(found) > limit else None
            page = EventPage(events, cursor, 0 if latest is None else latest.size)
            return page, {"returned": len(events)}, None

        details: dict[str, Detail] = {**where.as_dict(), "limit": limit}
        if after is not None:
            details["after"] = after
        return await self._audited(
            caller, AuditAction.AUDIT_QUERY, work, now_ms, where=where, details=details
        )

    async def event(
        self, caller: Caller, index: int, *, size: int | None = None, now_ms: int
    ) -> EventProof:
        """One event with its leaf and its inclusion proof at `size` (default: the latest
        checkpoint). The proof is None while the event is newer than that checkpoint."""

        async def work(
            log: AuditLog, tree: AuditTree
        ) -> tuple[EventProof, dict[str, Detail], Subject]:
            stored = await log.get(index)
            leaf = (await tree.leaves_at([index])).get(index)
            if stored is None or leaf is None:
                raise ComplianceRefused(f"no audit event {index}", code=ErrorCode.NOT_FOUND)
            latest = await tree.latest_checkpoint()
            latest_size = 0 if latest is None else latest.size
            target = latest_size if size is None else size
            if size is not None and not 1 <= size <= latest_size:
                raise ComplianceRefused(
                    f"size must be between 1 and the latest checkpoint's {latest_size}",
                    code=ErrorCode.BAD_REQUEST,
                )
            proof = await tree.inclusion_proof(index, target) if index < target else None
            checkpoint = latest if target == latest_size else await tree.checkpoint(target)
            subject = Subject(_uuid(stored.fields["subject_id"]), stored.fields["subject_name"])
            return EventProof(stored, leaf, target, proof, checkpoint), {}, subject

        return await self._audited(
            caller, AuditAction.AUDIT_EVENT, work, now_ms, resource=f"audit-event:{index}"
        )

    async def checkpoint(self, caller: Caller, *, now_ms: int) -> StoredCheckpoint:
        """The latest signed checkpoint."""

        async def work(
            log: AuditLog, tree: AuditTree
        ) -> tuple[StoredCheckpoint, dict[str, Detail], None]:
            latest = await tree.latest_checkpoint()
            if latest is None:
                raise ComplianceRefused("no checkpoint yet", code=ErrorCode.NOT_FOUND)
            return latest, {"size": latest.size}, None

        return await self._audited(caller, AuditAction.AUDIT_CHECKPOINT, work, now_ms)

    async def consistency(
        self, caller: Caller, first: int, second: int | None = None, *, now_ms: int
    ) -> Consistency:
        """The consistency proof from size `first` to `second` (default: the latest)."""

        async def work(
            log: AuditLog, tree: AuditTree
        ) -> tuple[Consistency, dict[str, Detail], None]:
            latest = await tree.latest_checkpoint()
            latest_size = 0 if latest is None else latest.size
            to = latest_size if second is None else second
            if not 1 <= first <= to <= latest_size:
                raise ComplianceRefused(
                    f"need 1 <= from <= to <= {latest_size} (the latest checkpoint)",
                    code=ErrorCode.BAD_REQUEST,
                )
            proof = await tree.consistency_proof(first, to)
            checkpoint = latest if to == latest_size else await tree.checkpoint(to)
            return Consistency(first, to, proof, checkpoint), {"first": first, "second": to}, None

        return await self._audited(caller, AuditAction.AUDIT_CONSISTENCY, work, now_ms)

    async def export(
        self, caller: Caller, where: EventFilter, *, format: ExportFormat, now_ms: int
    ) -> Export:
        """Record the export, then stream the bundle: every event matching `where` below the
        latest checkpoint, each with its inclusion proof against it."""

        async def work(
            log: AuditLog, tree: AuditTree
        ) -> tuple[BundleHeader, dict[str, Detail], None]:
            latest = await tree.latest_checkpoint()
            if latest is None:
                raise ComplianceRefused("no checkpoint yet", code=ErrorCode.NOT_FOUND)
            header = BundleHeader(latest.note, latest.size, now_ms, where.as_dict())
            return header, {"size": latest.size}, None

        details: dict[str, Detail] = {**where.as_dict(), "format": format}
        header = await self._audited(
            caller, AuditAction.AUDIT_EXPORT, work, now_ms, where=where, details=details
        )
        return Export(header, format, self._bundle(header, where, format))

    async def _bundle(
        self, header: BundleHeader, where: EventFilter, format: ExportFormat
    ) -> AsyncIterator[str]:
        line = csv_line if format == "csv" else ndjson_line
        if format == "csv":
            yield csv_header()
        yield line(header.record())
        after: int | None = None
        count = 0
        while True:
            async with self.database.read() as conn:
                events = await AuditLog(conn).page(
                    where, after=after, below=header.size, limit=self.export_batch
                )
                if not events:
                    yield line(end_record(count))
                    return
                tree = AuditTree(conn)
                leaves = await tree.leaves_at([e.index for e in events])
                plans = [inclusion_plan(e.index, header.size) for e in events]
                ids = list({node for plan in plans for node in plan.node_ids})
                hashes = dict(zip(ids, await tree.read_nodes(ids), strict=True))
            chunk = []
            for event, plan in zip(events, plans, strict=True):
                proof = plan.assemble([hashes[node] for node in plan.node_ids])
                record = BundleEvent(
                    event.index, event.fields, event.salt, leaves[event.index], proof
                )
                chunk.append(line(record.record()))
            yield "".join(chunk)
            after = events[-1].index
            count += len(events)

    async def _audited(
        self,
        caller: Caller,
        action: AuditAction,
        work: Work[T],
        now_ms: int,
        *,
        where: EventFilter | None = None,
        resource: str | None = None,
        details: Mapping[str, Detail] | None = None,
    ) -> T:
        """Run `work` and record the call in one write transaction; refuse other roles.

        A refusal, and a malformed request, are recorded in a transaction of their own first.
        """
        base = dict(details or {})
        subject = _subject(None if where is None else where.subject)
        refusal: ComplianceRefused | None = None
        if caller.actor.role not in self.roles:
            outcome = Outcome.DENIED
            roles = " or ".join(sorted(self.roles))
            refusal = ComplianceRefused(f"only the {roles} role may read the audit log")
        elif problem := _problem(caller, where):
            outcome = Outcome.FAILURE
            refusal = ComplianceRefused(problem, code=ErrorCode.BAD_REQUEST)
            base["error"] = refusal.code.value
        if refusal is not None:
            event = _safe_event(caller, action, outcome, subject, resource, base)
            async with self.database.write() as conn:
                await AuditLog(conn).record(event, now_ms=now_ms)
            raise refusal
        failure: ComplianceRefused | None = None
        async with self.database.write() as conn:
            try:
                result, more, found_subject = await work(AuditLog(conn), AuditTree(conn))
                outcome = Outcome.SUCCESS
            except ComplianceRefused as exc:
                failure, more, found_subject = exc, {"error": exc.code.value}, None
                outcome = Outcome.FAILURE
            event = _event(
                caller, action, outcome, found_subject or subject, resource, {**base, **more}
            )
            await AuditLog(conn).record(event, now_ms=now_ms)
        if failure is not None:
            raise failure
        return result


async def _never(log: AuditLog, tree: AuditTree) -> tuple[None, dict[str, Detail], None]:
    raise AssertionError("only called for a caller who is refused first")


def _event(
    caller: Caller,
    action: AuditAction,
    outcome: Outcome,
    subject: Subject | None,
    resource: str | None,
    details: dict[str, Detail],
) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor=caller.actor,
        subject=subject or Subject(),
        resource=resource,
        purpose=caller.reason,
        source=caller.source,
        details=details,
    )


def _safe_event(
    caller: Caller,
    action: AuditAction,
    outcome: Outcome,
    subject: Subject | None,
    resource: str | None,
    details: dict[str, Detail],
) -> AuditEvent:
    """The event of a refused call; text the caller sent is dropped if it can't be recorded."""
    try:
        return _event(caller, action, outcome, subject, resource, details)
    except ValueError:
        plain = Caller(caller.actor, caller.source, DEFAULT_REASON)
        return _event(plain, action, outcome, None, resource, {"error": "bad_request"})


def _problem(caller: Caller, where: EventFilter | None) -> str | None:
    """What is malformed about the request, or None."""
    try:
        check_text("reason", caller.reason, 200)
        if caller.reason is None:
            raise ValueError("a reason is required")
        for name, value in ({} if where is None else where.as_dict()).items():
            if isinstance(value, str):
                check_text(name, value, 64 if name in ("subject", "actor") else 200)
            elif value < 0:
                raise ValueError(f"{name} must not be negative")
        if where is not None and where.outcome is not None:
            Outcome(where.outcome)
    except ValueError as exc:
        return str(exc)
    return None


def _subject(value: str | None) -> Subject | None:
    if value is None:
        return None
    as_uuid = _uuid(value)
    return Subject(as_uuid, None) if as_uuid is not None else Subject(None, value[:64])


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value.lower() else None
