"""Retention's reads and deletes, one batch per call in the caller's transaction.

Nothing under an active legal hold is ever selected for deletion: an envelope is held when its
conversation is held or when any member of that conversation has an account hold; a queued
delivery also when its device belongs to a held account. Holds are read inside the caller's
transaction, which takes `HoldStore.lock` (storage/legal.py) first, so a hold placed (committed)
before a batch starts is always seen by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, delete, exists, select, tuple_, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import (
    conversation_members,
    deliveries,
    devices,
    envelopes,
    legal_holds,
)

DeliveryKey = tuple[uuid.UUID, int]
"""(device id, seq): a queued delivery, and the order retention walks the queues in."""
EnvelopeKey = tuple[int, int]
"""(received_ms, row id): an envelope, and the order retention walks envelopes in."""


def _held_accounts() -> Select[Any]:
    h = legal_holds.c
    return select(h.scope_account).where(h.released_ms.is_(None), h.scope_account.is_not(None))


def held_conversations() -> Select[Any]:
    """Conversations under an active hold: held themselves, or with a held member."""
    h, m = legal_holds.c, conversation_members.c
    return select(
        union(
            select(h.scope_conversation).where(
                h.released_ms.is_(None), h.scope_conversation.is_not(None)
            ),
            select(m.conversation_id).where(m.account_id.in_(_held_accounts())),
        ).subquery()
    )


def _held_devices() -> Select[Any]:
    return select(devices.c.id).where(devices.c.account_id.in_(_held_accounts()))


class RetentionStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def walk_deliveries(
        self, *, cutoff_ms: int, after: DeliveryKey | None, limit: int
    ) -> list[tuple[uuid.UUID, int, bool]]:
        """Up to `limit` queued deliveries after `after`, in (device, seq) order, each with
        whether it may expire: its envelope arrived before `cutoff_ms` and nothing holds it."""
        d, e = deliveries.c, envelopes.c
        expirable = case(
            (
                and_(
                    e.received_ms < cutoff_ms,
                    e.conversation_id.not_in(held_conversations()),
                    d.device_id.not_in(_held_devices()),
                ),
                True,
            ),
            else_=False,
        )
        query = select(d.device_id, d.seq, expirable).join(envelopes, e.id == d.envelope_id)
        if after is not None:
            query = query.where(tuple_(d.device_id, d.seq) > tuple_(*after))
        rows = await self.conn.execute(query.order_by(d.device_id, d.seq).limit(limit))
        return [(device_id, int(seq), bool(ok)) for device_id, seq, ok in rows]

    async def expire(self, through: Mapping[uuid.UUID, int]) -> None:
        """Remove each device's queued deliveries up to `through[device]`, and record that
        sequence as the device's `expired_seq` (a resume below it gets `gap`)."""
        if not through:
            return
        params = [{"b_id": device_id, "b_seq": seq} for device_id, seq in through.items()]
        await self.conn.execute(
            delete(deliveries).where(
                deliveries.c.device_id == bindparam("b_id"),
                deliveries.c.seq <= bindparam("b_seq"),
            ),
            params,
        )
        await self.conn.execute(
            update(devices)
            .where(devices.c.id == bindparam("b_id"), devices.c.expired_seq < bindparam("b_seq"))
            .values(expired_seq=bindparam("b_seq")),
            params,
        )

    async def walk_envelopes(
        self, *, cutoff_ms: int, after: EnvelopeKey | None, limit: int
    ) -> list[EnvelopeKey]:
        """Up to `limit` envelopes after `after`, in arrival order, that arrived before
        `cutoff_ms`, have no queued delivery left, and are not held."""
        e, d = envelopes.c, deliveries.c
        query = select(e.received_ms, e.id).where(
            e.received_ms < cutoff_ms,
            ~exists().where(d.envelope_id == e.id),
            e.conversation_id.not_in(held_conversations()),
        )
        if after is not None:
            query = query.where(tuple_(e.received_ms, e.id) > tuple_(*after))
        rows = await self.conn.execute(query.order_by(e.received_ms, e.id).limit(limit))
        return [(int(received_ms), int(row_id)) for received_ms, row_id in rows]

    async def delete_envelopes(self, ids: Sequence[int]) -> None:
        if ids:
            await self.conn.execute(delete(envelopes).where(envelopes.c.id.in_(list(ids))))
