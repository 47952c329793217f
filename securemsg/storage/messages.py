"""Envelopes (ciphertext as received) and per-device delivery queues.

Every statement here works on whole batches (SQLAlchemy Core executemany): the group-commit
writer calls these inside one transaction per batch, never one transaction per message.
A device's queue is its `deliveries` rows; a row is removed only when the device acknowledges it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import and_, bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import conversation_members, deliveries, devices, envelopes


@dataclasses.dataclass(frozen=True)
class StoredEnvelope:
    id: int
    conversation_id: uuid.UUID
    message_id: bytes
    received_ms: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class NewEnvelope:
    conversation_id: uuid.UUID
    message_id: bytes
    sender_device: uuid.UUID
    sent_ms: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class QueuedDelivery:
    seq: int
    data: bytes


class MessageStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def existing(
        self, keys: Iterable[tuple[uuid.UUID, bytes]]
    ) -> dict[tuple[uuid.UUID, bytes], StoredEnvelope]:
        """Envelopes already stored under these (conversation, message id) keys."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        rows = await self.conn.execute(
            select(
                envelopes.c.id,
                envelopes.c.conversation_id,
                envelopes.c.message_id,
                envelopes.c.received_ms,
                envelopes.c.data,
            ).where(tuple_(envelopes.c.conversation_id, envelopes.c.message_id).in_(wanted))
        )
        found = [StoredEnvelope(*row) for row in rows]
        return {(e.conversation_id, e.message_id): e for e in found}

    async def members(
        self, conversation_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, frozenset[uuid.UUID]]:
        ids = list(set(conversation_ids))
        result: dict[uuid.UUID, set[uuid.UUID]] = {c: set() for c in ids}
        if ids:
            rows = await self.conn.execute(
                select(
                    conversation_members.c.conversation_id, conversation_members.c.account_id
                ).where(conversation_members.c.conversation_id.in_(ids))
            )
            for conversation_id, account_id in rows:
                result[conversation_id].add(account_id)
        return {c: frozenset(m) for c, m in result.items() if m}

    async def active_devices(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """device id -> account id for the active devices of these accounts."""
        ids = list(set(account_ids))
        if not ids:
            return {}
        rows = await self.conn.execute(
            select(devices.c.id, devices.c.account_id).where(
                devices.c.account_id.in_(ids), devices.c.revoked_ms.is_(None)
            )
        )
        return {device_id: account_id for device_id, account_id in rows}

    async def insert_envelopes(self, new: Sequence[NewEnvelope], *, now_ms: int) -> list[int]:
        """Insert envelopes; return their row ids in the same order."""
        if not new:
            return []
        rows = await self.conn.execute(
            envelopes.insert().returning(envelopes.c.id, sort_by_parameter_order=True),
            [
                {
                    "conversation_id": e.conversation_id,
                    "message_id": e.message_id,
                    "sender_device": e.sender_device,
                    "sent_ms": e.sent_ms,
                    "received_ms": now_ms,
                    "data": e.data,
                }
                for e in new
            ],
        )
        return [row[0] for row in rows]

    async def allocate_seqs(self, counts: Mapping[uuid.UUID, int]) -> dict[uuid.UUID, int]:
        """Reserve `counts[device]` sequence numbers per device; return each first new one.

        Callers serialise writers (see Database.serialise_writers), so read-then-update is safe.
        """
        if not counts:
            return {}
        rows = await self.conn.execute(
            select(devices.c.id, devices.c.last_seq).where(devices.c.id.in_(list(counts)))
        )
        first = {device_id: last + 1 for device_id, last in rows}
        await self.conn.execute(
            update(devices)
            .where(devices.c.id == bindparam("b_id"))
            .values(last_seq=bindparam("b_last")),
            [
                {"b_id": device_id, "b_last": first[device_id] + counts[device_id] - 1}
                for device_id in first
            ],
        )
        return first

    async def insert_deliveries(self, rows: Sequence[tuple[uuid.UUID, int, int]]) -> None:
        """Queue (device, seq, envelope id) rows."""
        if rows:
            await self.conn.execute(
                deliveries.insert(),
                [{"device_id": d, "seq": s, "envelope_id": e} for d, s, e in rows],
            )

    async def acknowledge(self, acks: Mapping[uuid.UUID, int]) -> None:
        """Drop every queued delivery up to each device's acknowledged sequence number."""
        if not acks:
            return
        params = [{"b_id": device_id, "b_seq": seq} for device_id, seq in acks.items()]
        await self.conn.execute(
            delete(deliveries).where(
                deliveries.c.device_id == bindparam("b_id"), deliveries.c.seq <= bindparam("b_seq")
            ),
            params,
        )
        await self.conn.execute(
            update(devices)
            .where(devices.c.id == bindparam("b_id"), devices.c.acked_seq < bindparam("b_seq"))
            .values(acked_seq=bindparam("b_seq")),
            params,
        )

    async def queued(self, device_id: uuid.UUID, *, after: int, limit: int) -> list[QueuedDelivery]:
        rows = await self.conn.execute(
            select(deliveries.c.seq, envelopes.c.data)
            .join(envelopes, envelopes.c.id == deliveries.c.envelope_id)
            .where(and_(deliveries.c.device_id == device_id, deliveries.c.seq > after))
            .order_by(deliveries.c.seq)
            .limit(limit)
        )
        return [QueuedDelivery(seq, data) for seq, data in rows]

    async def cursor(self, device_id: uuid.UUID) -> tuple[int, int, int]:
        """(last_seq, acked_seq, expired_seq) of a device."""
        row = (
            await self.conn.execute(
                select(devices.c.last_seq, devices.c.acked_seq, devices.c.expired_seq).where(
                    devices.c.id == device_id
                )
            )
        ).first()
        return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))
