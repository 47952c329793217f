"""Login sessions: only the SHA-256 of each token is stored, never the token."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import accounts, sessions


@dataclasses.dataclass(frozen=True)
class Session:
    id: uuid.UUID
    account_id: uuid.UUID
    created_ms: int
    last_seen_ms: int
    expires_ms: int
    revoked_ms: int | None


class SessionStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(
        self, *, account_id: uuid.UUID, token_hash: bytes, now_ms: int, expires_ms: int
    ) -> Session:
        session_id = uuid.uuid4()
        await self.conn.execute(
            sessions.insert().values(
                id=session_id,
                account_id=account_id,
                token_hash=token_hash,
                created_ms=now_ms,
                last_seen_ms=now_ms,
                expires_ms=expires_ms,
            )
        )
        return Session(session_id, account_id, now_ms, now_ms, expires_ms, None)

    async def by_token_hash(self, token_hash: bytes) -> Session | None:
        row = (
            await self.conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.account_id,
                    sessions.c.created_ms,
                    sessions.c.last_seen_ms,
                    sessions.c.expires_ms,
                    sessions.c.revoked_ms,
                ).where(sessions.c.token_hash == token_hash)
            )
        ).first()
        return None if row is None else Session(*row)

    async def touch(
        self, session_ids: Iterable[uuid.UUID], *, now_ms: int, older_than_ms: int = 0
    ) -> None:
        """Mark sessions as used now; only those last seen more than `older_than_ms` ago."""
        ids = list(session_ids)
        if ids:
            await self.conn.execute(
                update(sessions)
                .where(sessions.c.id.in_(ids), sessions.c.last_seen_ms <= now_ms - older_than_ms)
                .values(last_seen_ms=now_ms)
            )

    async def revoke(self, session_id: uuid.UUID, *, now_ms: int) -> None:
        await self.conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_ms.is_(None))
            .values(revoked_ms=now_ms)
        )

    async def revoke_account(self, account_id: uuid.UUID, *, now_ms: int) -> int:
        result = await self.conn.execute(
            update(sessions)
            .where(sessions.c.account_id == account_id, sessions.c.revoked_ms.is_(None))
            .values(revoked_ms=now_ms)
        )
        return int(result.rowcount)

    async def ended(
        self, session_ids: Iterable[uuid.UUID], *, now_ms: int, idle_ms: int
    ) -> set[uuid.UUID]:
        """Which of these sessions are revoked, expired, idle too long, or of a disabled account."""
        ids = list(session_ids)
        if not ids:
            return set()
        query = (
            select(sessions.c.id)
            .join(accounts, accounts.c.id == sessions.c.account_id)
            .where(
                sessions.c.id.in_(ids),
                or_(
                    sessions.c.revoked_ms.is_not(None),
                    sessions.c.expires_ms <= now_ms,
                    sessions.c.last_seen_ms <= now_ms - idle_ms,
                    accounts.c.disabled_ms.is_not(None),
                ),
            )
        )
        found = {row[0] for row in await self.conn.execute(query)}
        # A session row that no longer exists at all has ended too.
        present = {
            row[0]
            for row in await self.conn.execute(
                select(sessions.c.id).where(and_(sessions.c.id.in_(ids)))
            )
        }
        return found | (set(ids) - present)
