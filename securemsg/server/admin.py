"""Account and conversation administration, used by the CLI (and later an admin API).

Admins manage accounts; nothing here reads messages. Usernames are validated here, once.
"""

from __future__ import annotations

import re
import uuid

from securemsg.server.passwords import PasswordHashing
from securemsg.storage.accounts import Account, AccountStore, Role
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from securemsg.storage.errors import NotFound
from securemsg.storage.sessions import SessionStore

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 8


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
        self, database: Database, hashing: PasswordHashing, *, max_password_bytes: int
    ) -> None:
        self.database = database
        self.hashing = hashing
        self.max_password_bytes = max_password_bytes

    async def create_account(
        self, username: str, role: Role, password: str, *, now_ms: int
    ) -> Account:
        check_username(username)
        check_password(password, max_bytes=self.max_password_bytes)
        password_hash = await self.hashing.hash(password)
        async with self.database.write() as conn:
            return await AccountStore(conn).create(
                username=username, role=role, password_hash=password_hash, now_ms=now_ms
            )

    async def disable_account(self, username: str, *, now_ms: int) -> Account:
        """Disable the account and revoke its sessions; open sockets close within seconds."""
        async with self.database.write() as conn:
            store = AccountStore(conn)
            account = await store.by_username(username)
            await store.set_disabled(account.id, now_ms=now_ms)
            await SessionStore(conn).revoke_account(account.id, now_ms=now_ms)
            return account

    async def enable_account(self, username: str) -> Account:
        async with self.database.write() as conn:
            store = AccountStore(conn)
            account = await store.by_username(username)
            await store.set_disabled(account.id, now_ms=None)
            return account

    async def revoke_sessions(self, username: str, *, now_ms: int) -> int:
        async with self.database.write() as conn:
            account = await AccountStore(conn).by_username(username)
            return await SessionStore(conn).revoke_account(account.id, now_ms=now_ms)

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
            return await ConversationStore(conn).create(
                therapist_id=therapist_account.id, client_id=client_account.id, now_ms=now_ms
            )
