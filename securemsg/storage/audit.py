"""The audit log in SQL: fail-closed recording inside the caller's transaction, and queries.

`await AuditLog(conn).record(event, now_ms=now_ms)` appends the event's leaf and its readable row
in the caller's own write transaction, at the next dense index, under the database's
serialisation (SQLite's single writer; a transaction-level advisory lock on PostgreSQL, held to
commit, so indexes also commit in order). It raises `AuditWriteFailed` if the database refuses,
and the caller's transaction then rolls back: no audit row, no access. Call it last in the
transaction: on PostgreSQL it serialises every audited transaction from that point to commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, String, func, select, text, type_coerce
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.audit.events import (
    EVENT_VERSION,
    SALT_BYTES,
    AuditEvent,
    SealedEvent,
    canonical_json,
)
from securemsg.storage.database import WRITE_OPTION
from securemsg.storage.errors import StorageError
from securemsg.storage.models import audit_events, audit_leaves

_APPEND_LOCK_KEY = 0x5EC0_A0D1  # arbitrary, fixed: the advisory lock id for audit appends

EVENT_COLUMNS = (
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


class AuditWriteFailed(StorageError):
    """The audit row could not be written, so the access it records must not happen."""


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """A readable event as stored: its leaf index, its event object, and its salt."""

    index: int
    fields: dict[str, Any]
    salt: bytes


@dataclasses.dataclass(frozen=True)
class EventFilter:
    """What a compliance query selects; None means any. Every given condition must hold.

    `subject` and `actor` match the account id when they parse as a UUID, else the username.
    `action` ending in `.*` matches that prefix (`audit.*`). Times are [since_ms, until_ms).
    """

    subject: str | None = None
    actor: str | None = None
    action: str | None = None
    purpose: str | None = None
    outcome: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in dataclasses.astuple(self))

    def as_dict(self) -> dict[str, str | int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def conditions(self) -> list[ColumnElement[bool]]:
        c = audit_events.c
        found: list[ColumnElement[bool]] = []
        for value, id_column, name_column in (
            (self.subject, c.subject_id, c.subject_name),
            (self.actor, c.actor_id, c.actor_name),
        ):
            if value is not None:
                as_uuid = _as_uuid(value)
                found.append(id_column == as_uuid if as_uuid else name_column == value)
        if self.action is not None:
            if self.action.endswith(".*"):
                found.append(c.action.startswith(self.action[:-1], autoescape=True))
            else:
                found.append(c.action == self.action)
        if self.purpose is not None:
            found.append(c.purpose == self.purpose)
        if self.outcome is not None:
            found.append(c.outcome == self.outcome)
        if self.since_ms is not None:
            found.append(c.time_ms >= self.since_ms)
        if self.until_ms is not None:
            found.append(c.time_ms < self.until_ms)
        return found


class AuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def record(self, event: AuditEvent, *, now_ms: int) -> int:
        """Append one event in the caller's transaction; return its leaf index."""
        return (await self.record_many([event], now_ms=now_ms))[0]

    async def record_many(self, events: Sequence[AuditEvent], *, now_ms: int) -> list[int]:
        """Append events in order with one statement per table; return their leaf indexes."""
        sealed = [SealedEvent(now_ms, event, secrets.token_bytes(SALT_BYTES)) for event in events]
        return await self._append(sealed)

    async def _append(self, sealed: Sequence[SealedEvent]) -> list[int]:
        if not sealed:
            return []
        if self.conn.sync_connection is not None and (
            self.conn.sync_connection.get_execution_options().get(WRITE_OPTION) is False
        ):
            raise AuditWriteFailed("audit events are recorded in a write transaction")
        try:
            if self.conn.dialect.name == "postgresql":
                await self.conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY}
                )
            first = await self.next_index()
            leaves, rows = [], []
            for offset, item in enumerate(sealed):
                index = first + offset
                fields = item.event.fields(item.time_ms)
                leaves.append({"leaf_index": index, "leaf": item.leaf})
                rows.append(_event_row(index, fields, item.salt))
            await self.conn.execute(audit_leaves.insert(), leaves)
            await self.conn.execute(audit_events.insert(), rows)
        except DBAPIError as exc:
            raise AuditWriteFailed(
                f"audit log refused the event ({type(exc.orig).__name__}); access refused"
            ) from exc
        return list(range(first, first + len(sealed)))

    async def next_index(self) -> int:
        """The index the next leaf gets: the number of leaves (they are dense from 0)."""
        found = await self.conn.execute(select(func.max(audit_leaves.c.leaf_index)))
        last = found.scalar()
        return 0 if last is None else int(last) + 1

    async def page(
        self,
        where: EventFilter,
        *,
        after: int | None = None,
        below: int | None = None,
        limit: int,
    ) -> list[StoredEvent]:
        """Events matching `where`, by index, with after < index < below, at most `limit`."""
        query = _select_events().where(*where.conditions())
        if after is not None:
            query = query.where(audit_events.c.leaf_index > after)
        if below is not None:
            query = query.where(audit_events.c.leaf_index < below)
        rows = await self.conn.execute(query.order_by(audit_events.c.leaf_index).limit(limit))
        return [_from_row(row) for row in rows]

    async def get(self, index: int) -> StoredEvent | None:
        query = _select_events().where(audit_events.c.leaf_index == index)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _from_row(row)


def stored_event(index: int, values: Sequence[Any], salt: bytes) -> StoredEvent:
    """A `StoredEvent` from its leaf index, its `EVENT_COLUMNS` values in order, and its salt.

    Values are taken as stored, without checks, so a tampered row still reads (and then fails
    `securemsg audit verify`) instead of breaking every query.
    """
    fields = dict(zip(EVENT_COLUMNS, values, strict=True))
    fields["v"] = EVENT_VERSION
    for name in ("actor_id", "subject_id"):
        value = fields[name]
        if value is not None:
            text = str(value)  # SQLite stores 32 hex digits, PostgreSQL a uuid
            if len(text) == 32:
                text = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
            fields[name] = text
    # Unreadable details stay the raw text: they can't match the commitment.
    with contextlib.suppress(TypeError, ValueError):
        fields["details"] = json.loads(fields["details"])
    return StoredEvent(index, fields, bytes(salt))


EVENT_SELECT = (
    audit_events.c.leaf_index,
    # Ids read as stored text, not converted to UUID objects and back: verify reads millions.
    *(
        type_coerce(audit_events.c[name], String) if name.endswith("_id") else audit_events.c[name]
        for name in EVENT_COLUMNS
    ),
    audit_events.c.salt,
)
"""The columns `stored_event` reads, in its order: index, the event columns, salt."""


def _from_row(row: Sequence[Any]) -> StoredEvent:
    return stored_event(int(row[0]), row[1:-1], row[-1])


def _select_events() -> Select[Any]:
    return select(*EVENT_SELECT)


def _event_row(index: int, fields: dict[str, Any], salt: bytes) -> dict[str, Any]:
    row = {name: fields[name] for name in EVENT_COLUMNS}
    row["actor_id"] = _as_uuid(fields["actor_id"])
    row["subject_id"] = _as_uuid(fields["subject_id"])
    row["details"] = canonical_json(fields["details"]).decode("utf-8")
    row["leaf_index"] = index
    row["salt"] = salt
    return row


def _as_uuid(value: str | None) -> uuid.UUID | None:
    """The UUID `value` spells in canonical form (so a username never reads as an id), or None."""
    if value is None:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value.lower() else None
