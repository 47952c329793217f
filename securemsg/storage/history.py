"""A conversation's stored envelopes and system events, oldest first, as history reads see them."""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import envelopes


@dataclasses.dataclass(frozen=True)
class HistoryItem:
    id: int
    kind: str
    received_ms: int
    data: bytes


class HistoryStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def page(
        self, conversation_id: uuid.UUID, *, after_id: int, limit: int
    ) -> list[HistoryItem]:
        rows = await self.conn.execute(
            select(envelopes.c.id, envelopes.c.kind, envelopes.c.received_ms, envelopes.c.data)
            .where(envelopes.c.conversation_id == conversation_id, envelopes.c.id > after_id)
            .order_by(envelopes.c.id)
            .limit(limit)
        )
        return [HistoryItem(*row) for row in rows]

    async def message_ids(self, conversation_id: uuid.UUID) -> set[bytes]:
        rows = await self.conn.execute(
            select(envelopes.c.message_id).where(
                envelopes.c.conversation_id == conversation_id, envelopes.c.kind == "message"
            )
        )
        return {row[0] for row in rows}
