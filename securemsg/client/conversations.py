"""Conversations as the SDK sees them: exactly two readers, a client and a therapist.

The server's member list is routing information, not a trust decision. `readers_of` keeps only
the one client and the one therapist of a conversation; anyone else the server lists (or a
second account of either role) is ignored or refused, and the peer first seen in a conversation
is pinned, so a server cannot quietly swap who is on the other end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from securemsg.client.errors import ConversationChanged
from securemsg.client.events import AccountId, ConversationId

if TYPE_CHECKING:
    from securemsg.client.http import Api
    from securemsg.client.keystore import KeystoreState

READER_ROLES = ("client", "therapist")


@dataclass(frozen=True, slots=True)
class Member:
    account: AccountId
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation this account takes part in, and the one peer on the other end."""

    id: ConversationId
    created_ms: int
    me: Member
    peer: Member


def readers_of(
    conversation_id: uuid.UUID,
    created_ms: int,
    members: list[Member],
    *,
    me: uuid.UUID,
    pinned_peer: uuid.UUID | None,
) -> Conversation | None:
    """The conversation with its two readers, or None if this account is not one of them.

    Raise `ConversationChanged` if the peer differs from `pinned_peer`.
    """
    by_role: dict[str, list[Member]] = {role: [] for role in READER_ROLES}
    for member in members:
        if member.role in by_role:
            by_role[member.role].append(member)
    if any(len(found) != 1 for found in by_role.values()):
        return None  # not a client-therapist pair: nothing the SDK will encrypt to
    client, therapist = by_role["client"][0], by_role["therapist"][0]
    if client.account == therapist.account or me not in (client.account, therapist.account):
        return None
    mine, peer = (client, therapist) if client.account == me else (therapist, client)
    if pinned_peer is not None and peer.account != pinned_peer:
        raise ConversationChanged(
            f"the server now names {peer.username} ({peer.account}) as the peer in conversation"
            f" {conversation_id}, which was pinned to {pinned_peer}"
        )
    return Conversation(ConversationId(conversation_id), created_ms, mine, peer)


class ConversationBook:
    """The conversations this account reads, refreshed from the server and pinned in the state."""

    MIN_REFRESH_SECONDS = 1.0  # an unknown conversation id refreshes at most this often

    def __init__(self, state: KeystoreState, api: Api, *, on_change: Callable[[], object]) -> None:
        self.state = state
        self.api = api
        self.on_change = on_change
        self._found: dict[uuid.UUID, Conversation] = {}
        self._changed: dict[uuid.UUID, ConversationChanged] = {}
        self._fetched = 0.0

    def all(self) -> list[Conversation]:
        return sorted(self._found.values(), key=lambda c: (c.created_ms, c.id))

    async def refresh(self) -> list[Conversation]:
        assert self.state.account is not None
        records = await self.api.conversations()
        self._fetched = time.monotonic()
        for record in records:
            pinned = self.state.conversations.get(record.id)
            try:
                found = readers_of(
                    record.id,
                    record.created_ms,
                    record.members,
                    me=self.state.account,
                    pinned_peer=pinned,
                )
            except ConversationChanged as error:
                self._changed[record.id] = error
                self._found.pop(record.id, None)
                continue
            if found is None:
                continue
            self._found[record.id] = found
            if pinned is None:
                self.state.conversations[record.id] = found.peer.account
                self.on_change()
        return self.all()

    async def lookup(self, conversation_id: uuid.UUID) -> Conversation | None:
        """The conversation, refreshing once if it is unknown; raise `ConversationChanged` if the
        server swapped its peer."""
        found = self._found.get(conversation_id)
        if found is None and conversation_id not in self._changed:
            if time.monotonic() - self._fetched > self.MIN_REFRESH_SECONDS:
                await self.refresh()
            found = self._found.get(conversation_id)
        error = self._changed.get(conversation_id)
        if error is not None:
            raise error
        return found
