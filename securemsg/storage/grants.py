"""Supervisor grants and key shares as stored: the signed records plus the fields queries need."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.conversations import ConversationStore
from securemsg.storage.models import grants, key_shares


@dataclasses.dataclass(frozen=True)
class StoredGrant:
    id: uuid.UUID
    conversation_id: uuid.UUID
    supervisor_id: uuid.UUID
    therapist_id: uuid.UUID
    therapist_device: uuid.UUID
    from_ms: int
    until_ms: int
    include_history: bool
    record: bytes
    consent: bytes | None
    created_ms: int
    revoked_ms: int | None
    revoked_by: uuid.UUID | None

    def active_at(self, now_ms: int) -> bool:
        return self.revoked_ms is None and self.from_ms <= now_ms < self.until_ms


class GrantStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, grant: StoredGrant) -> None:
        await self.conn.execute(grants.insert().values(**dataclasses.asdict(grant)))

    async def get(self, grant_id: uuid.UUID) -> StoredGrant | None:
        row = (await self.conn.execute(select(grants).where(grants.c.id == grant_id))).first()
        return None if row is None else StoredGrant(**row._mapping)

    async def of_conversation(self, conversation_id: uuid.UUID) -> list[StoredGrant]:
        rows = await self.conn.execute(
            select(grants)
            .where(grants.c.conversation_id == conversation_id)
            .order_by(grants.c.created_ms)
        )
        return [StoredGrant(**row._mapping) for row in rows]

    async def active(
        self,
        conversation_ids: Iterable[uuid.UUID],
        *,
        now_ms: int,
        supervisor_id: uuid.UUID | None = None,
    ) -> list[StoredGrant]:
        """Grants in force at `now_ms` on these conversations (optionally for one supervisor)."""
        ids = list(set(conversation_ids))
        if not ids:
            return []
        query = select(grants).where(
            grants.c.conversation_id.in_(ids),
            grants.c.revoked_ms.is_(None),
            grants.c.from_ms <= now_ms,
            grants.c.until_ms > now_ms,
        )
        if supervisor_id is not None:
            query = query.where(grants.c.supervisor_id == supervisor_id)
        return [StoredGrant(**row._mapping) for row in await self.conn.execute(query)]

    async def revoke(self, grant_id: uuid.UUID, *, by: uuid.UUID, now_ms: int) -> bool:
        result = await self.conn.execute(
            update(grants)
            .where(grants.c.id == grant_id, grants.c.revoked_ms.is_(None))
            .values(revoked_ms=now_ms, revoked_by=by)
        )
        return bool(result.rowcount)

    async def add_key_shares(
        self, rows: Sequence[tuple[uuid.UUID, bytes, uuid.UUID, bytes]], *, now_ms: int
    ) -> None:
        """Store (grant, message id, supervisor device, record) rows; repeats are skipped."""
        existing = {
            (m, d)
            for m, d in await self.conn.execute(
                select(key_shares.c.message_id, key_shares.c.device_id).where(
                    key_shares.c.grant_id.in_({r[0] for r in rows})
                )
            )
        }
        fresh = [r for r in rows if (r[1], r[2]) not in existing]
        if fresh:
            await self.conn.execute(
                key_shares.insert(),
                [
                    {
                        "grant_id": g,
                        "message_id": m,
                        "device_id": d,
                        "record": rec,
                        "created_ms": now_ms,
                    }
                    for g, m, d, rec in fresh
                ],
            )

    async def key_shares_for(self, grant_id: uuid.UUID, device_id: uuid.UUID) -> list[bytes]:
        rows = await self.conn.execute(
            select(key_shares.c.record)
            .where(key_shares.c.grant_id == grant_id, key_shares.c.device_id == device_id)
            .order_by(key_shares.c.created_ms, key_shares.c.message_id)
        )
        return [row[0] for row in rows]


async def linked(conn: AsyncConnection, a: uuid.UUID, b: uuid.UUID, now_ms: int) -> bool:
    """Whether `a` and `b` share a conversation, or a grant in force links one's conversation
    to the other as supervisor."""
    conversations = await ConversationStore(conn).of_account(a)
    if any(m.account_id == b for c in conversations for m in c.members):
        return True
    store = GrantStore(conn)
    mine = [c.id for c in conversations]
    if await store.active(mine, now_ms=now_ms, supervisor_id=b):  # a participant asks
        return True
    theirs = [c.id for c in await ConversationStore(conn).of_account(b)]
    return bool(await store.active(theirs, now_ms=now_ms, supervisor_id=a))  # a supervises
