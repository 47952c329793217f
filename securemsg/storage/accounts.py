"""Accounts: usernames, roles, password hashes, and the identity key and device list they sign."""

from __future__ import annotations

import dataclasses
import enum
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.errors import Conflict, NotFound
from securemsg.storage.models import accounts


class Role(enum.StrEnum):
    CLIENT = "client"
    THERAPIST = "therapist"
    SUPERVISOR = "supervisor"
    COMPLIANCE = "compliance"
    ADMIN = "admin"


@dataclasses.dataclass(frozen=True)
class Account:
    id: uuid.UUID
    username: str
    role: Role
    password_hash: str
    created_ms: int
    disabled_ms: int | None
    identity_key: bytes | None
    device_list: bytes | None
    device_list_version: int

    @property
    def disabled(self) -> bool:
        return self.disabled_ms is not None


class AccountStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(
        self, *, username: str, role: Role, password_hash: str, now_ms: int
    ) -> Account:
        account_id = uuid.uuid4()
        try:
            await self.conn.execute(
                accounts.insert().values(
                    id=account_id,
                    username=username,
                    role=role.value,
                    password_hash=password_hash,
                    created_ms=now_ms,
                )
            )
        except IntegrityError:
            raise Conflict(f"username {username!r} is taken") from None
        return await self.get(account_id)

    async def get(self, account_id: uuid.UUID) -> Account:
        row = (await self.conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return _account(row._mapping)

    async def find(self, username: str) -> Account | None:
        row = (
            await self.conn.execute(select(accounts).where(accounts.c.username == username))
        ).first()
        return None if row is None else _account(row._mapping)

    async def by_username(self, username: str) -> Account:
        account = await self.find(username)
        if account is None:
            raise NotFound(f"no account named {username!r}")
        return account

    async def set_disabled(self, account_id: uuid.UUID, *, now_ms: int | None) -> None:
        await self.conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(disabled_ms=now_ms)
        )

    async def set_password_hash(self, account_id: uuid.UUID, password_hash: str) -> None:
        await self.conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(password_hash=password_hash)
        )

    async def set_identity(
        self,
        account_id: uuid.UUID,
        *,
        identity_key: bytes,
        device_list: bytes,
        device_list_version: int,
    ) -> None:
        await self.conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(
                identity_key=identity_key,
                device_list=device_list,
                device_list_version=device_list_version,
            )
        )


def _account(row: object) -> Account:
    m = dict(row)  # type: ignore[call-overload]
    m["role"] = Role(m["role"])
    return Account(**m)
