"""Devices: the public keys an account's identity key has certified, and their queue cursors."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import devices


@dataclasses.dataclass(frozen=True)
class Device:
    id: uuid.UUID
    account_id: uuid.UUID
    signing_key: bytes
    encryption_key: bytes
    certificate: bytes
    created_ms: int
    revoked_ms: int | None
    last_seq: int
    acked_seq: int
    expired_seq: int

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


class DeviceStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, device_id: uuid.UUID) -> Device | None:
        row = (await self.conn.execute(select(devices).where(devices.c.id == device_id))).first()
        return None if row is None else Device(**row._mapping)

    async def of_accounts(
        self, account_ids: Iterable[uuid.UUID], *, active_only: bool = True
    ) -> list[Device]:
        query = select(devices).where(devices.c.account_id.in_(list(account_ids)))
        if active_only:
            query = query.where(devices.c.revoked_ms.is_(None))
        rows = await self.conn.execute(query.order_by(devices.c.account_id, devices.c.id))
        return [Device(**row._mapping) for row in rows]

    async def add(
        self,
        *,
        device_id: uuid.UUID,
        account_id: uuid.UUID,
        signing_key: bytes,
        encryption_key: bytes,
        certificate: bytes,
        now_ms: int,
    ) -> None:
        await self.conn.execute(
            devices.insert().values(
                id=device_id,
                account_id=account_id,
                signing_key=signing_key,
                encryption_key=encryption_key,
                certificate=certificate,
                created_ms=now_ms,
            )
        )

    async def revoke_except(
        self, account_id: uuid.UUID, keep: Iterable[uuid.UUID], *, now_ms: int
    ) -> list[uuid.UUID]:
        """Revoke every active device of the account not in `keep`; return the revoked ids."""
        keep_ids = list(keep)
        rows = await self.conn.execute(
            update(devices)
            .where(
                devices.c.account_id == account_id,
                devices.c.revoked_ms.is_(None),
                devices.c.id.not_in(keep_ids),
            )
            .values(revoked_ms=now_ms)
            .returning(devices.c.id)
        )
        return [row[0] for row in rows]
