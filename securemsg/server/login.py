"""Login, token authentication, logout and revocation, as a service with time passed in.

Rate limits are checked before any hash is computed: every attempt from an address takes a
token from that address's bucket, and every attempt on a username takes one from the username's
bucket, given back when the login succeeds (so only failures count, yet concurrent guesses cannot
all slip past the check). Unknown user, wrong password and disabled account fail identically.
Every login, failed login, lockout and logout is audited (fail-closed): a lockout once per key
and window, so a flood of refused attempts can't flood the audit log too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid

from securemsg.audit.events import (
    MAX_NAME_CHARS,
    Actor,
    AuditAction,
    AuditEvent,
    Outcome,
    Source,
    Subject,
    clean_text,
)
from securemsg.protocol.errors import ErrorCode
from securemsg.server.passwords import HashingOverloaded, PasswordHashing
from securemsg.server.ratelimit import RateLimiter
from securemsg.settings import Settings
from securemsg.storage.accounts import Account, AccountStore, Role
from securemsg.storage.audit import AuditLog
from securemsg.storage.database import Database
from securemsg.storage.sessions import SessionStore

TOKEN_BYTES = 32
TOUCH_EVERY_MS = 30_000
PURPOSE = "authentication"


class LoginError(Exception):
    """A login or authentication was refused; `code` is the wire code."""

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is behind a valid token."""

    account_id: uuid.UUID
    username: str
    role: Role
    session_id: uuid.UUID


@dataclasses.dataclass(frozen=True)
class LoginResult:
    token: str
    principal: Principal
    expires_ms: int


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class LoginService:
    def __init__(self, database: Database, settings: Settings, hashing: PasswordHashing) -> None:
        self.database = database
        self.settings = settings
        self.hashing = hashing
        window = settings.login_window_seconds
        self.by_address = RateLimiter(
            capacity=settings.login_attempts_per_address, per_seconds=window
        )
        self.by_account = RateLimiter(
            capacity=settings.login_attempts_per_account, per_seconds=window
        )
        # One audited lockout per (limit, key) and window, however many attempts are refused.
        self.lockouts = RateLimiter(capacity=1, per_seconds=window)

    async def login(
        self,
        username: str,
        password: str,
        *,
        address: str,
        now_ms: int,
        request_id: str | None = None,
    ) -> LoginResult:
        source = Source(clean_text(address, MAX_NAME_CHARS) or None, request_id)
        if not self.by_address.take(address, now_ms):
            await self._lockout("address", username, source, now_ms=now_ms)
            raise LoginError(
                ErrorCode.RATE_LIMITED,
                "too many login attempts from this address",
                self.by_address.retry_after_seconds(address, now_ms),
            )
        if not self.by_account.take(username, now_ms):
            await self._lockout("account", username, source, now_ms=now_ms)
            raise LoginError(
                ErrorCode.RATE_LIMITED,
                "too many failed logins for this account",
                self.by_account.retry_after_seconds(username, now_ms),
            )
        async with self.database.read() as conn:
            account = await AccountStore(conn).find(username)
        try:
            ok = await self.hashing.verify(
                None if account is None else account.password_hash, password
            )
        except HashingOverloaded:
            self.by_account.give_back(username)
            raise LoginError(ErrorCode.UNAVAILABLE, "server busy, try again", 1.0) from None
        if not ok or account is None or account.disabled:
            reason = "unknown_user" if account is None else "wrong_password"
            if ok and account is not None:
                reason = "account_disabled"
            failed = _attempt(AuditAction.LOGIN_FAILED, Outcome.FAILURE, username, account, source)
            await self._record(dataclasses.replace(failed, details={"reason": reason}), now_ms)
            raise LoginError(ErrorCode.LOGIN_FAILED, "unknown username or wrong password")
        self.by_account.give_back(username)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_ms = now_ms + int(self.settings.session_lifetime_seconds * 1000)
        async with self.database.write() as conn:
            session = await SessionStore(conn).create(
                account_id=account.id,
                token_hash=token_hash(token),
                now_ms=now_ms,
                expires_ms=expires_ms,
            )
            event = _attempt(AuditAction.LOGIN, Outcome.SUCCESS, username, account, source)
            event = dataclasses.replace(event, resource=f"session:{session.id}")
            await AuditLog(conn).record(event, now_ms=now_ms)
        principal = Principal(account.id, account.username, account.role, session.id)
        return LoginResult(token, principal, expires_ms)

    async def authenticate(self, token: str, *, now_ms: int) -> Principal:
        """The principal behind a live token, or LoginError(AUTH_FAILED)."""
        if not token or len(token) > 256:
            raise LoginError(ErrorCode.AUTH_FAILED, "invalid or expired token")
        digest = token_hash(token)
        async with self.database.read() as conn:
            session = await SessionStore(conn).by_token_hash(digest)
            account = None if session is None else await AccountStore(conn).get(session.account_id)
        idle_ms = int(self.settings.session_idle_seconds * 1000)
        if (
            session is None
            or account is None
            or account.disabled
            or session.revoked_ms is not None
            or session.expires_ms <= now_ms
            or session.last_seen_ms <= now_ms - idle_ms
        ):
            raise LoginError(ErrorCode.AUTH_FAILED, "invalid or expired token")
        if now_ms - session.last_seen_ms >= TOUCH_EVERY_MS:
            async with self.database.write() as conn:
                await SessionStore(conn).touch([session.id], now_ms=now_ms)
        return Principal(account.id, account.username, account.role, session.id)

    async def logout(
        self, principal: Principal, *, now_ms: int, source: Source | None = None
    ) -> None:
        async with self.database.write() as conn:
            await SessionStore(conn).revoke(principal.session_id, now_ms=now_ms)
            event = AuditEvent(
                action=AuditAction.LOGOUT,
                outcome=Outcome.SUCCESS,
                actor=Actor(principal.account_id, principal.username, principal.role.value),
                subject=Subject(principal.account_id, principal.username),
                resource=f"session:{principal.session_id}",
                purpose=PURPOSE,
                source=source or Source(),
            )
            await AuditLog(conn).record(event, now_ms=now_ms)

    async def _lockout(self, scope: str, username: str, source: Source, *, now_ms: int) -> None:
        """Record that a login limit refused an attempt: once per limit, key and window."""
        key = (scope, source.address if scope == "address" else username)
        if not self.lockouts.take(key, now_ms):
            return
        async with self.database.write() as conn:
            account = await AccountStore(conn).find(username)
            event = _attempt(AuditAction.LOGIN_LOCKED, Outcome.DENIED, username, account, source)
            event = dataclasses.replace(event, details={"limit": scope})
            await AuditLog(conn).record(event, now_ms=now_ms)

    async def _record(self, event: AuditEvent, now_ms: int) -> None:
        async with self.database.write() as conn:
            await AuditLog(conn).record(event, now_ms=now_ms)


def _attempt(
    action: AuditAction, outcome: Outcome, username: str, account: Account | None, source: Source
) -> AuditEvent:
    """A login attempt's event. An unknown username is recorded as typed (never the password):
    compliance officers need it to see guessing, and only they can read it."""
    if account is None:
        actor, subject = Actor(None, clean_text(username, MAX_NAME_CHARS) or None), Subject()
    else:
        actor = Actor(account.id, account.username, account.role.value)
        subject = Subject(account.id, account.username)
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor=actor,
        subject=subject,
        purpose=PURPOSE,
        source=source,
    )
