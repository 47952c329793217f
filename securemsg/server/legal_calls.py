"""The audited call every legal-request and legal-hold operation is: compliance role only, one
write transaction, one audit event.

A success is recorded in the same write transaction as the state change or read it reports
(fail-closed: no record, no change and no data). A refusal (`LegalRefused`) rolls that
transaction back and is recorded in one of its own; a caller without the compliance role is
refused, and recorded, before anything in the request is looked at.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from securemsg.audit.events import (
    MAX_SAFE_INTEGER,
    Actor,
    AuditAction,
    AuditEvent,
    Detail,
    Outcome,
    Source,
    Subject,
    check_text,
)
from securemsg.protocol.errors import ErrorCode, ProtocolError
from securemsg.storage.accounts import Role
from securemsg.storage.audit import AuditLog
from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database
from securemsg.storage.legal import HoldStore, LegalRequestStore, Scope, ScopeStore

T = TypeVar("T")


class LegalRefused(ProtocolError):
    """A legal call was refused: `code` goes on the wire, `outcome` (and `reason`) into the
    audit event that records the refusal."""

    code = ErrorCode.FORBIDDEN

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        outcome: Outcome = Outcome.FAILURE,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.outcome = outcome
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Officer:
    """Who is calling (any role: `Audited.run` checks it) and from where."""

    actor: Actor
    source: Source = dataclasses.field(default_factory=Source)

    @property
    def account_id(self) -> uuid.UUID:
        if self.actor.id is None:
            raise LegalRefused("legal requests and holds are handled by compliance accounts")
        return self.actor.id


@dataclasses.dataclass(frozen=True)
class Stores:
    """The stores of one call's transaction."""

    requests: LegalRequestStore
    holds: HoldStore
    scope: ScopeStore
    log: AuditLog
    tree: AuditTree


@dataclasses.dataclass
class Call:
    """One audited call: who, what, about what, and the details its event records. The work
    fills in what it finds; it may record the success itself (and set `recorded`)."""

    officer: Officer
    action: AuditAction
    purpose: str
    resource: str | None = None
    subject: Subject = dataclasses.field(default_factory=Subject)
    details: dict[str, Detail] = dataclasses.field(default_factory=dict)
    recorded: bool = False

    def event(self, outcome: Outcome) -> AuditEvent:
        return AuditEvent(
            action=self.action,
            outcome=outcome,
            actor=self.officer.actor,
            subject=self.subject,
            resource=self.resource,
            purpose=self.purpose,
            source=self.officer.source,
            details=self.details,
        )


Work = Callable[[Stores, Call], Awaitable[T]]


class Audited:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def authorize(self, call: Call, *, now_ms: int) -> None:
        """Refuse, and record the refusal, unless the caller has the compliance role. The edge
        calls it before it reads anything else of the request; `run` calls it again."""
        if call.officer.actor.role != Role.COMPLIANCE.value:
            refusal = LegalRefused(
                "only the compliance role may handle legal requests and holds",
                outcome=Outcome.DENIED,
            )
            await self._refused(call, refusal, now_ms)
            raise refusal

    async def run(self, call: Call, work: Work[T], *, now_ms: int) -> T:
        """Run `work` and record `call` in one write transaction, or record its refusal."""
        await self.authorize(call, now_ms=now_ms)
        try:
            async with self.database.write() as conn:
                stores = Stores(
                    LegalRequestStore(conn),
                    HoldStore(conn),
                    ScopeStore(conn),
                    AuditLog(conn),
                    AuditTree(conn),
                )
                result = await work(stores, call)
                if not call.recorded:
                    await stores.log.record(call.event(Outcome.SUCCESS), now_ms=now_ms)
                return result
        except LegalRefused as refusal:
            await self._refused(call, refusal, now_ms)
            raise

    async def _refused(self, call: Call, refusal: LegalRefused, now_ms: int) -> None:
        # Only the error code and reason: nothing the caller sent, which may not fit an event.
        call.details = {"error": refusal.code.value}
        if refusal.reason is not None:
            call.details["reason"] = refusal.reason
        async with self.database.write() as conn:
            await AuditLog(conn).record(call.event(refusal.outcome), now_ms=now_ms)


async def scope_subject(scope_store: ScopeStore, scope: Scope) -> Subject:
    """An event's subject: the scope's account, else the client of its conversation. Refuses
    (`not_found`) an account or conversation that does not exist, and (`bad_request`) an
    account that is not a member of the scope's conversation."""
    members: dict[uuid.UUID, str] = {}
    if scope.conversation is not None:
        found = await scope_store.members(scope.conversation)
        if found is None:
            raise LegalRefused(f"no conversation {scope.conversation}", code=ErrorCode.NOT_FOUND)
        members = found
        if scope.account is not None and scope.account not in members:
            raise bad_request("the scope's account is not a member of its conversation")
    if scope.account is not None:
        name = await scope_store.username(scope.account)
        if name is None:
            raise LegalRefused(f"no account {scope.account}", code=ErrorCode.NOT_FOUND)
        return Subject(scope.account, name)
    client = next((a for a, role in members.items() if role == Role.CLIENT.value), None)
    return Subject() if client is None else Subject(client, await scope_store.username(client))


def check_time(name: str, value: int | None) -> None:
    """Refuse (`bad_request`) a time in ms that is negative or beyond 2**53-1."""
    if value is not None and not 0 <= value <= MAX_SAFE_INTEGER:
        raise bad_request(f"{name} must be between 0 and 2**53-1")


def check_field(name: str, value: str, max_chars: int) -> None:
    """Refuse (`bad_request`) text that is blank, too long, or holds control characters."""
    try:
        check_text(name, value, max_chars)
    except ValueError as exc:
        raise bad_request(str(exc).removeprefix("audit ")) from None
    if not value.strip():
        raise bad_request(f"{name} must not be blank")


def bad_request(message: str) -> LegalRefused:
    return LegalRefused(message, code=ErrorCode.BAD_REQUEST)
