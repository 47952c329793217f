"""Account and conversation administration, used by the CLI (and later an admin API).

Admins manage accounts; nothing here reads messages. Usernames are validated here, once.
Every change is audited in its own transaction (fail-closed), as done by `actor`.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from securemsg.audit.events import (
    CLI_SOURCE,
    Actor,
    AuditAction,
    AuditEvent,
    Detail,
    Outcome,
    Source,
    Subject,
)
from securemsg.server.passwords import PasswordHashing
from securemsg.storage.accounts import Account, AccountStore, Role
from securemsg.storage.audit import AuditLog
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from securemsg.storage.erasure import Erased, ErasureStore
from securemsg.storage.errors import NotFound
from securemsg.storage.legal import Hold, HoldStore
from securemsg.storage.sessions import SessionStore

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 8
PURPOSE = "account administration"


class AccountOnHold(ValueError):
    """The account is under legal hold (its own, or one of its conversations'): it can't be
    deleted until every such hold is released."""

    def __init__(self, username: str, holds: list[Hold]) -> None:
        named = "; ".join(
            f"hold {h.id} on {'the account' if h.scope_account else 'a conversation of it'}"
            for h in holds
        )
        super().__init__(
            f"account {username!r} is under legal hold ({named}); it can't be deleted until "
            "the hold is released"
        )
        self.holds = holds


class AdminError(ValueError):
    """An administrative request was invalid; the message says why."""


def check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise AdminError(
            "username must be 1-64 characters of a-z, 0-9, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str, *, max_bytes: int) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AdminError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode("utf-8", "surrogatepass")) > max_bytes:
        raise AdminError(f"password must be at most {max_bytes} bytes")
    return password


class AdminService:
    def __init__(
        self,
        database: Database,
        hashing: PasswordHashing,
        *,
        max_password_bytes: int,
        actor: Actor | None = None,
        source: Source = CLI_SOURCE,
    ) -> None:
        self.database = database
        self.hashing = hashing
        self.max_password_bytes = max_password_bytes
        self.actor = actor or Actor.operator()
        self.source = source

    def _event(self, action: AuditAction, account: Account, **details: Detail) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=Outcome.SUCCESS,
            actor=self.actor,
            subject=Subject(account.id, account.username),
            purpose=PURPOSE,
            source=self.source,
            details=details,
        )

    async def create_account(
        self, username: str, role: Role, password: str, *, now_ms: int
    ) -> Account:
        check_username(username)
        check_password(password, max_bytes=self.max_password_bytes)
        password_hash = await self.hashing.hash(password)
        async with self.database.write() as conn:
            account = await AccountStore(conn).create(
                username=username, role=role, password_hash=password_hash, now_ms=now_ms
            )
            event = self._event(AuditAction.ACCOUNT_CREATED, account, role=role.value)
            await AuditLog(conn).record(event, now_ms=now_ms)
            return account

    async def disable_account(self, username: str, *, now_ms: int) -> Account:
        """Disable the account and revoke its sessions; open sockets close within seconds."""
        async with self.database.write() as conn:
            store = AccountStore(conn)
            account = await store.by_username(username)
            await store.set_disabled(account.id, now_ms=now_ms)
            count = await SessionStore(conn).revoke_account(account.id, now_ms=now_ms)
            event = self._event(AuditAction.ACCOUNT_DISABLED, account, sessions_revoked=count)
            await AuditLog(conn).record(event, now_ms=now_ms)
            return account

    async def enable_account(self, username: str, *, now_ms: int) -> Account:
        async with self.database.write() as conn:
            store = AccountStore(conn)
            account = await store.by_username(username)
            await store.set_disabled(account.id, now_ms=None)
            event = self._event(AuditAction.ACCOUNT_ENABLED, account)
            await AuditLog(conn).record(event, now_ms=now_ms)
            return account

    async def revoke_sessions(self, username: str, *, now_ms: int) -> int:
        async with self.database.write() as conn:
            account = await AccountStore(conn).by_username(username)
            count = await SessionStore(conn).revoke_account(account.id, now_ms=now_ms)
            event = self._event(AuditAction.SESSIONS_REVOKED, account, sessions_revoked=count)
            await AuditLog(conn).record(event, now_ms=now_ms)
            return count

    async def create_conversation(self, therapist: str, client: str, *, now_ms: int) -> uuid.UUID:
        async with self.database.write() as conn:
            accounts = AccountStore(conn)
            try:
                therapist_account = await accounts.by_username(therapist)
                client_account = await accounts.by_username(client)
            except NotFound as exc:
                raise AdminError(str(exc)) from None
            if therapist_account.role is not Role.THERAPIST:
                raise AdminError(f"{therapist!r} is a {therapist_account.role}, not a therapist")
            if client_account.role is not Role.CLIENT:
                raise AdminError(f"{client!r} is a {client_account.role}, not a client")
            conversation_id = await ConversationStore(conn).create(
                therapist_id=therapist_account.id, client_id=client_account.id, now_ms=now_ms
            )
            event = self._event(
                AuditAction.CONVERSATION_CREATED,
                client_account,
                therapist_id=str(therapist_account.id),
            )
            event = dataclasses.replace(event, resource=f"conversation:{conversation_id}")
            await AuditLog(conn).record(event, now_ms=now_ms)
            return conversation_id

    async def delete_account(self, username: str, *, now_ms: int) -> Erased:
        """Delete an account (storage/erasure.py says what goes and what is scrubbed), unless a
        legal hold covers it or a conversation it is a member of: then `AccountOnHold`, and the
        refusal is recorded. Open sockets of the account close within seconds."""
        async with self.database.write() as conn:
            account = await AccountStore(conn).by_username(username)
            holds = HoldStore(conn)
            await holds.lock()  # no hold can commit between this check and the delete
            covering = await holds.covering_account(account.id)
            if not covering:
                await self.database.serialise_writers(conn)  # its queues vs delivery batches
                erased = await ErasureStore(conn).erase(account.id, now_ms=now_ms)
                event = self._event(
                    AuditAction.ACCOUNT_DELETED,
                    account,
                    sessions=erased.sessions,
                    devices=erased.devices,
                    undelivered=erased.deliveries,
                    memberships=erased.memberships,
                    row="deleted" if erased.row_deleted else "scrubbed",
                )
                await AuditLog(conn).record(event, now_ms=now_ms)
                return erased
        refused = self._event(
            AuditAction.ACCOUNT_DELETED, account, holds=tuple(str(h.id) for h in covering)
        )
        async with self.database.write() as conn:
            await AuditLog(conn).record(
                dataclasses.replace(refused, outcome=Outcome.DENIED), now_ms=now_ms
            )
        raise AccountOnHold(username, covering)
