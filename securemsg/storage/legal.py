"""Legal requests and legal holds as stored, and the reads an export and an accounting need.

Stores take the caller's connection; services own the transactions. A request changes state only
by a conditional update (`WHERE status = <expected>`), so two officers racing on one request
can't both win. `HoldStore.lock` serialises placing a hold with retention's deletes and account
deletion.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.audit import EVENT_SELECT, StoredEvent, stored_event
from securemsg.storage.models import (
    accounts,
    audit_events,
    conversation_members,
    conversations,
    envelopes,
    legal_holds,
    legal_requests,
)

_HOLD_LOCK_KEY = 0x5EC0_1E6A  # arbitrary, fixed: the advisory lock id for holds vs deletions


class Status(enum.StrEnum):
    """A legal request's state; server/legal.py holds the transition table."""

    FILED = "filed"
    APPROVED = "approved"
    DENIED = "denied"
    EXPORTED = "exported"
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class Scope:
    """Whose data a request (or hold) covers: an account, a conversation, or both, optionally
    only envelopes received in [from_ms, until_ms)."""

    account: uuid.UUID | None = None
    conversation: uuid.UUID | None = None
    from_ms: int | None = None
    until_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class LegalRequest:
    id: uuid.UUID
    status: Status
    filed_by: uuid.UUID
    filed_ms: int
    authority: str
    reference: str
    legal_basis: str
    scope: Scope
    notice_after_ms: int | None = None
    decided_by: uuid.UUID | None = None
    decided_ms: int | None = None
    decision_note: str | None = None
    exported_ms: int | None = None
    bundle_sha256: bytes | None = None
    closed_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    scope_account: uuid.UUID | None
    scope_conversation: uuid.UUID | None
    reason: str
    placed_by: uuid.UUID
    placed_ms: int
    released_by: uuid.UUID | None = None
    released_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.released_ms is None


@dataclasses.dataclass(frozen=True)
class ScopeRow:
    """One stored envelope as an export hands it over: ciphertext and routing metadata."""

    conversation_id: uuid.UUID
    message_id: bytes
    sender_device: uuid.UUID
    sent_ms: int
    received_ms: int
    kind: str
    data: bytes


# -- requests ------------------------------------------------------------------------------

_REQUEST_COLUMNS = tuple(c for c in legal_requests.c if c.name != "bundle")


class LegalRequestStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, request: LegalRequest) -> None:
        scope = request.scope
        await self.conn.execute(
            legal_requests.insert().values(
                id=request.id,
                status=request.status.value,
                filed_by=request.filed_by,
                filed_ms=request.filed_ms,
                authority=request.authority,
                reference=request.reference,
                legal_basis=request.legal_basis,
                scope_account=scope.account,
                scope_conversation=scope.conversation,
                scope_from_ms=scope.from_ms,
                scope_until_ms=scope.until_ms,
                notice_after_ms=request.notice_after_ms,
            )
        )

    async def get(self, request_id: uuid.UUID, *, for_update: bool = False) -> LegalRequest | None:
        query = select(*_REQUEST_COLUMNS).where(legal_requests.c.id == request_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return None if row is None else _request(row._mapping)

    async def page(
        self, *, status: Status | None, before: LegalRequest | None, limit: int
    ) -> list[LegalRequest]:
        """Requests, newest filed first, after the page that ended with `before`."""
        c = legal_requests.c
        query = select(*_REQUEST_COLUMNS)
        if status is not None:
            query = query.where(c.status == status.value)
        if before is not None:
            query = query.where(tuple_(c.filed_ms, c.id) < tuple_(before.filed_ms, before.id))
        rows = await self.conn.execute(query.order_by(c.filed_ms.desc(), c.id.desc()).limit(limit))
        return [_request(row._mapping) for row in rows]

    async def transition(
        self, request_id: uuid.UUID, expected: Sequence[Status], new: Status, **values: Any
    ) -> bool:
        """Move the request to `new` (setting `values`) if it is in one of `expected`."""
        result = await self.conn.execute(
            update(legal_requests)
            .where(
                legal_requests.c.id == request_id,
                legal_requests.c.status.in_([s.value for s in expected]),
            )
            .values(status=new.value, **values)
        )
        return bool(result.rowcount == 1)

    async def bundle(self, request_id: uuid.UUID) -> bytes | None:
        query = select(legal_requests.c.bundle).where(legal_requests.c.id == request_id)
        value = (await self.conn.execute(query)).scalar()
        return None if value is None else bytes(value)

    async def disclosed_to(
        self, account_id: uuid.UUID, *, now_ms: int, limit: int
    ) -> list[LegalRequest]:
        """Exported requests whose scope covers the account, once their notice delay is over:
        its own account, a conversation it is a member of, or (account scope alone) an account
        it shares a conversation with. Newest export first."""
        c, m = legal_requests.c, conversation_members.c
        mine = select(m.conversation_id).where(m.account_id == account_id)
        other = conversation_members.alias("other")
        partners = (
            select(other.c.account_id)
            .join(
                conversation_members,
                conversation_members.c.conversation_id == other.c.conversation_id,
            )
            .where(conversation_members.c.account_id == account_id)
        )
        covers = or_(
            c.scope_account == account_id,
            c.scope_conversation.in_(mine),
            and_(c.scope_conversation.is_(None), c.scope_account.in_(partners)),
        )
        visible = or_(c.notice_after_ms.is_(None), c.notice_after_ms <= now_ms)
        query = (
            select(*_REQUEST_COLUMNS)
            .where(c.exported_ms.is_not(None), covers, visible)
            .order_by(c.exported_ms.desc(), c.id)
            .limit(limit)
        )
        return [_request(row._mapping) for row in await self.conn.execute(query)]


def _request(row: Any) -> LegalRequest:
    return LegalRequest(
        id=row["id"],
        status=Status(row["status"]),
        filed_by=row["filed_by"],
        filed_ms=row["filed_ms"],
        authority=row["authority"],
        reference=row["reference"],
        legal_basis=row["legal_basis"],
        scope=Scope(
            row["scope_account"],
            row["scope_conversation"],
            row["scope_from_ms"],
            row["scope_until_ms"],
        ),
        notice_after_ms=row["notice_after_ms"],
        decided_by=row["decided_by"],
        decided_ms=row["decided_ms"],
        decision_note=row["decision_note"],
        exported_ms=row["exported_ms"],
        bundle_sha256=None if row["bundle_sha256"] is None else bytes(row["bundle_sha256"]),
        closed_ms=row["closed_ms"],
    )


# -- holds ---------------------------------------------------------------------------------


class HoldStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self) -> None:
        """Serialise placing holds with deletions (retention, account deletion) until this
        transaction ends: a hold that committed first is seen by every later deletion. Only
        PostgreSQL needs it; SQLite runs one write transaction at a time."""
        if self.conn.dialect.name == "postgresql":
            query = text("SELECT pg_advisory_xact_lock(:key)")
            await self.conn.execute(query, {"key": _HOLD_LOCK_KEY})

    async def insert(self, hold: Hold) -> None:
        await self.conn.execute(legal_holds.insert().values(**dataclasses.asdict(hold)))

    async def get(self, hold_id: uuid.UUID) -> Hold | None:
        row = (
            await self.conn.execute(select(legal_holds).where(legal_holds.c.id == hold_id))
        ).first()
        return None if row is None else Hold(**row._mapping)

    async def release(self, hold_id: uuid.UUID, *, by: uuid.UUID, now_ms: int) -> bool:
        result = await self.conn.execute(
            update(legal_holds)
            .where(legal_holds.c.id == hold_id, legal_holds.c.released_ms.is_(None))
            .values(released_by=by, released_ms=now_ms)
        )
        return bool(result.rowcount == 1)

    async def page(self, *, active_only: bool, before: Hold | None, limit: int) -> list[Hold]:
        """Holds, newest placed first, after the page that ended with `before`."""
        c = legal_holds.c
        query = select(legal_holds)
        if active_only:
            query = query.where(c.released_ms.is_(None))
        if before is not None:
            query = query.where(tuple_(c.placed_ms, c.id) < tuple_(before.placed_ms, before.id))
        rows = await self.conn.execute(query.order_by(c.placed_ms.desc(), c.id.desc()).limit(limit))
        return [Hold(**row._mapping) for row in rows]

    async def covering_account(self, account_id: uuid.UUID) -> list[Hold]:
        """Active holds on the account itself or on a conversation it is a member of."""
        c, m = legal_holds.c, conversation_members.c
        mine = select(m.conversation_id).where(m.account_id == account_id)
        query = (
            select(legal_holds)
            .where(
                c.released_ms.is_(None),
                or_(c.scope_account == account_id, c.scope_conversation.in_(mine)),
            )
            .order_by(c.placed_ms)
        )
        return [Hold(**row._mapping) for row in await self.conn.execute(query)]


# -- what a scope names --------------------------------------------------------------------


class ScopeStore:
    """Reads about the accounts, conversations and envelopes a request or hold names."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def username(self, account_id: uuid.UUID) -> str | None:
        query = select(accounts.c.username).where(accounts.c.id == account_id)
        value = (await self.conn.execute(query)).scalar()
        return None if value is None else str(value)

    async def members(self, conversation_id: uuid.UUID) -> dict[uuid.UUID, str] | None:
        """account id -> member role of a conversation; None if there is no such conversation."""
        exists = select(conversations.c.id).where(conversations.c.id == conversation_id)
        if (await self.conn.execute(exists)).first() is None:
            return None
        m = conversation_members.c
        rows = await self.conn.execute(
            select(m.account_id, m.role).where(m.conversation_id == conversation_id)
        )
        return {account_id: str(role) for account_id, role in rows}

    async def size(self, scope: Scope) -> tuple[int, int]:
        """(envelopes, ciphertext bytes) in the scope."""
        query = select(func.count(), func.coalesce(func.sum(func.length(envelopes.c.data)), 0))
        row = (await self.conn.execute(query.where(*_in_scope(scope)))).one()
        return int(row[0]), int(row[1])

    async def envelopes(self, scope: Scope, *, limit: int) -> list[ScopeRow]:
        """The scope's envelopes by arrival (received_ms, then row id), at most `limit`."""
        e = envelopes.c
        query: Select[Any] = (
            select(
                e.conversation_id,
                e.message_id,
                e.sender_device,
                e.sent_ms,
                e.received_ms,
                e.kind,
                e.data,
            )
            .where(*_in_scope(scope))
            .order_by(e.received_ms, e.id)
            .limit(limit)
        )
        return [
            ScopeRow(c, bytes(mid), dev, int(sent), int(received), str(kind), bytes(data))
            for c, mid, dev, sent, received, kind, data in await self.conn.execute(query)
        ]

    async def events_about(self, resource: str, *, action_prefix: str) -> list[StoredEvent]:
        """The readable audit events about `resource` whose action starts with `action_prefix`,
        in index order (found through the action index: events of one kind are few)."""
        c = audit_events.c
        query = (
            select(*EVENT_SELECT)
            .where(c.action.startswith(action_prefix, autoescape=True), c.resource == resource)
            .order_by(c.leaf_index)
        )
        return [
            stored_event(int(row[0]), row[1:-1], row[-1]) for row in await self.conn.execute(query)
        ]


def _in_scope(scope: Scope) -> list[ColumnElement[bool]]:
    e, m = envelopes.c, conversation_members.c
    found: list[ColumnElement[bool]] = []
    if scope.conversation is not None:
        found.append(e.conversation_id == scope.conversation)
    if scope.account is not None:
        found.append(
            e.conversation_id.in_(select(m.conversation_id).where(m.account_id == scope.account))
        )
    if scope.from_ms is not None:
        found.append(e.received_ms >= scope.from_ms)
    if scope.until_ms is not None:
        found.append(e.received_ms < scope.until_ms)
    return found
