"""Deleting an account: what is its own goes; what others still reference is scrubbed.

Sessions, devices, the deliveries queued for those devices (and supervisor key shares wrapped to
them) and conversation memberships are deleted. The account row is deleted too, unless a grant,
legal request or legal hold still names it (foreign keys): then it is disabled and scrubbed, its
username replaced, its password hash made unusable and its keys removed. Envelopes it sent stay
with the conversation (they are the other member's history too) until retention deletes them.
The caller checks legal holds first (server/admin.py) in the same transaction.
"""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import ColumnElement, Table, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import (
    accounts,
    conversation_members,
    deliveries,
    devices,
    grants,
    key_shares,
    legal_holds,
    legal_requests,
    sessions,
)

# Not an Argon2 hash: no password ever verifies against it.
UNUSABLE_PASSWORD_HASH = "!deleted"  # noqa: S105


@dataclasses.dataclass(frozen=True)
class Erased:
    """What deleting one account removed."""

    sessions: int
    devices: int
    deliveries: int
    memberships: int
    row_deleted: bool  # False: the row was scrubbed and disabled (it is still referenced)


class ErasureStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def erase(self, account_id: uuid.UUID, *, now_ms: int) -> Erased:
        own_devices = select(devices.c.id).where(devices.c.account_id == account_id)
        queued = await self._delete(deliveries, deliveries.c.device_id.in_(own_devices))
        await self._delete(key_shares, key_shares.c.device_id.in_(own_devices))
        device_count = await self._delete(devices, devices.c.account_id == account_id)
        session_count = await self._delete(sessions, sessions.c.account_id == account_id)
        memberships = await self._delete(
            conversation_members, conversation_members.c.account_id == account_id
        )
        referenced = or_(
            exists().where(
                or_(grants.c.supervisor_id == account_id, grants.c.therapist_id == account_id)
            ),
            exists().where(legal_requests.c.filed_by == account_id),
            exists().where(legal_holds.c.placed_by == account_id),
        )
        if (await self.conn.execute(select(referenced))).scalar():
            await self.conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    username=f"deleted-{account_id.hex}",
                    password_hash=UNUSABLE_PASSWORD_HASH,
                    disabled_ms=now_ms,
                    identity_key=None,
                    device_list=None,
                )
            )
            row_deleted = False
        else:
            await self._delete(accounts, accounts.c.id == account_id)
            row_deleted = True
        return Erased(session_count, device_count, queued, memberships, row_deleted)

    async def _delete(self, table: Table, condition: ColumnElement[bool]) -> int:
        result = await self.conn.execute(delete(table).where(condition))
        return int(result.rowcount)
