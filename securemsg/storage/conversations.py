"""Conversations and their members: the platform pairs exactly one client with one therapist."""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.storage.models import accounts, conversation_members, conversations


@dataclasses.dataclass(frozen=True)
class Member:
    account_id: uuid.UUID
    username: str
    role: str


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    created_ms: int
    members: tuple[Member, ...]


class ConversationStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(
        self, *, therapist_id: uuid.UUID, client_id: uuid.UUID, now_ms: int
    ) -> uuid.UUID:
        conversation_id = uuid.uuid4()
        await self.conn.execute(
            conversations.insert().values(id=conversation_id, created_ms=now_ms)
        )
        await self.conn.execute(
            conversation_members.insert(),
            [
                {
                    "conversation_id": conversation_id,
                    "account_id": therapist_id,
                    "role": "therapist",
                    "added_ms": now_ms,
                },
                {
                    "conversation_id": conversation_id,
                    "account_id": client_id,
                    "role": "client",
                    "added_ms": now_ms,
                },
            ],
        )
        return conversation_id

    async def member_roles(self, conversation_id: uuid.UUID) -> dict[uuid.UUID, str]:
        """account id -> "client" or "therapist" (empty for an unknown conversation)."""
        rows = await self.conn.execute(
            select(conversation_members.c.account_id, conversation_members.c.role).where(
                conversation_members.c.conversation_id == conversation_id
            )
        )
        return {account_id: role for account_id, role in rows}

    async def member_ids(self, conversation_id: uuid.UUID) -> frozenset[uuid.UUID]:
        rows = await self.conn.execute(
            select(conversation_members.c.account_id).where(
                conversation_members.c.conversation_id == conversation_id
            )
        )
        return frozenset(row[0] for row in rows)

    async def of_account(self, account_id: uuid.UUID) -> list[Conversation]:
        mine = (
            select(conversation_members.c.conversation_id)
            .where(conversation_members.c.account_id == account_id)
            .scalar_subquery()
        )
        rows = await self.conn.execute(
            select(
                conversations.c.id,
                conversations.c.created_ms,
                conversation_members.c.account_id,
                accounts.c.username,
                conversation_members.c.role,
            )
            .join(
                conversation_members,
                conversation_members.c.conversation_id == conversations.c.id,
            )
            .join(accounts, accounts.c.id == conversation_members.c.account_id)
            .where(conversations.c.id.in_(mine))
            .order_by(conversations.c.created_ms, conversations.c.id, conversation_members.c.role)
        )
        result: dict[uuid.UUID, tuple[int, list[Member]]] = {}
        for conv_id, created_ms, member_id, username, role in rows:
            result.setdefault(conv_id, (created_ms, []))[1].append(
                Member(member_id, username, role)
            )
        return [
            Conversation(conv_id, created_ms, tuple(members))
            for conv_id, (created_ms, members) in result.items()
        ]
