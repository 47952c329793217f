"""The login service without Starlette: limits before hashing, uniform failure, expiry."""

from __future__ import annotations

import dataclasses

import pytest
from argon2 import Type, extract_parameters

from securemsg.clock import FakeClock
from securemsg.protocol.errors import ErrorCode
from securemsg.server.admin import AdminError, AdminService
from securemsg.server.login import LoginError, LoginService
from securemsg.server.passwords import PasswordHashing
from securemsg.settings import Settings
from securemsg.storage.accounts import Role
from securemsg.storage.database import Database

FAST = Settings(
    argon2_time_cost=1,
    argon2_memory_kib=1024,
    login_attempts_per_account=3,
    login_attempts_per_address=10,
    login_window_seconds=60,
    session_idle_seconds=600,
    session_lifetime_seconds=3600,
)


class CountingHashing(PasswordHashing):
    """The real hasher, counting how many verifications it was asked for."""

    verifications = 0

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password)


@pytest.fixture
async def service(database: Database, clock: FakeClock) -> tuple[LoginService, CountingHashing]:
    hashing = CountingHashing(FAST)
    admin = AdminService(database, hashing, max_password_bytes=1024)
    await admin.create_account("alice", Role.CLIENT, "alice-password", now_ms=clock.now_ms())
    await admin.create_account("bob", Role.THERAPIST, "bob-password", now_ms=clock.now_ms())
    return LoginService(database, FAST, hashing), hashing


async def test_login_returns_a_token_that_authenticates(
    service: tuple[LoginService, CountingHashing], clock: FakeClock
) -> None:
    login, _ = service
    result = await login.login("alice", "alice-password", address="10.0.0.1", now_ms=clock.now_ms())
    assert len(result.token) >= 43  # 256 bits, base64url
    principal = await login.authenticate(result.token, now_ms=clock.now_ms())
    assert principal.username == "alice" and principal.role is Role.CLIENT


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong"), ("nobody", "alice-password")]
)
async def test_unknown_user_and_wrong_password_fail_identically_after_hashing(
    service: tuple[LoginService, CountingHashing], clock: FakeClock, username: str, password: str
) -> None:
    login, hashing = service
    with pytest.raises(LoginError) as caught:
        await login.login(username, password, address="10.0.0.1", now_ms=clock.now_ms())
    assert caught.value.code is ErrorCode.LOGIN_FAILED
    assert str(caught.value) == "unknown username or wrong password"
    assert hashing.verifications == 1


async def test_failed_logins_lock_the_username_before_any_hash_is_computed(
    service: tuple[LoginService, CountingHashing], clock: FakeClock
) -> None:
    login, hashing = service
    for _ in range(3):
        with pytest.raises(LoginError):
            await login.login("alice", "wrong", address="10.0.0.1", now_ms=clock.now_ms())
    with pytest.raises(LoginError) as caught:
        await login.login("alice", "alice-password", address="10.0.0.2", now_ms=clock.now_ms())
    assert caught.value.code is ErrorCode.RATE_LIMITED and caught.value.retry_after
    assert hashing.verifications == 3
    # Another account is unaffected.
    await login.login("bob", "bob-password", address="10.0.0.1", now_ms=clock.now_ms())
    # The bucket refills with time.
    clock.advance(60)
    await login.login("alice", "alice-password", address="10.0.0.2", now_ms=clock.now_ms())


async def test_one_address_is_limited_across_usernames(
    service: tuple[LoginService, CountingHashing], clock: FakeClock
) -> None:
    login, hashing = service
    for i in range(10):
        with pytest.raises(LoginError):
            await login.login(f"guess{i}", "x", address="10.9.9.9", now_ms=clock.now_ms())
    with pytest.raises(LoginError) as caught:
        await login.login("bob", "bob-password", address="10.9.9.9", now_ms=clock.now_ms())
    assert caught.value.code is ErrorCode.RATE_LIMITED
    assert hashing.verifications == 10


async def test_session_expires_when_idle_and_at_its_lifetime(
    service: tuple[LoginService, CountingHashing], clock: FakeClock
) -> None:
    login, _ = service
    token = (await login.login("alice", "alice-password", address="a", now_ms=clock.now_ms())).token
    clock.advance(599)
    await login.authenticate(token, now_ms=clock.now_ms())  # use refreshes the idle timer
    clock.advance(599)
    await login.authenticate(token, now_ms=clock.now_ms())
    clock.advance(601)
    with pytest.raises(LoginError, match="invalid or expired"):
        await login.authenticate(token, now_ms=clock.now_ms())
    token = (await login.login("alice", "alice-password", address="a", now_ms=clock.now_ms())).token
    for _ in range(6):
        clock.advance(590)
        await login.authenticate(token, now_ms=clock.now_ms())
    clock.advance(590)  # past the one-hour lifetime, though never idle
    with pytest.raises(LoginError):
        await login.authenticate(token, now_ms=clock.now_ms())


async def test_logout_and_disable_end_sessions(
    service: tuple[LoginService, CountingHashing], clock: FakeClock, database: Database
) -> None:
    login, hashing = service
    first = await login.login("alice", "alice-password", address="a", now_ms=clock.now_ms())
    await login.logout(first.principal, now_ms=clock.now_ms())
    with pytest.raises(LoginError):
        await login.authenticate(first.token, now_ms=clock.now_ms())
    second = await login.login("alice", "alice-password", address="a", now_ms=clock.now_ms())
    await AdminService(database, hashing, max_password_bytes=1024).disable_account(
        "alice", now_ms=clock.now_ms()
    )
    with pytest.raises(LoginError):
        await login.authenticate(second.token, now_ms=clock.now_ms())
    with pytest.raises(LoginError) as caught:
        await login.login("alice", "alice-password", address="b", now_ms=clock.now_ms())
    assert caught.value.code is ErrorCode.LOGIN_FAILED


async def test_token_hash_only_is_stored(
    service: tuple[LoginService, CountingHashing], clock: FakeClock, database: Database
) -> None:
    from tests.support.db import snapshot

    login, _ = service
    token = (await login.login("alice", "alice-password", address="a", now_ms=clock.now_ms())).token
    url = database.engine.url.render_as_string(hide_password=False)
    dump = repr(await snapshot(url))
    assert token not in dump and "alice-password" not in dump


@pytest.mark.parametrize(
    ("username", "password"),
    [("Alice", "long enough"), ("a" * 65, "long enough"), ("", "long enough"), ("ok", "short")],
)
async def test_account_creation_validates_username_and_password(
    database: Database, clock: FakeClock, username: str, password: str
) -> None:
    admin = AdminService(database, PasswordHashing(FAST), max_password_bytes=1024)
    with pytest.raises(AdminError):
        await admin.create_account(username, Role.CLIENT, password, now_ms=clock.now_ms())


def test_settings_used_here_are_valid() -> None:
    dataclasses.replace(FAST).validate()


async def test_password_hashes_record_every_argon2_setting() -> None:
    settings = Settings(argon2_time_cost=3, argon2_memory_kib=2048, argon2_parallelism=2)
    hashing = PasswordHashing(settings)
    try:
        encoded = await hashing.hash("a long enough password")
        params = extract_parameters(encoded)
        assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (
            Type.ID,
            3,
            2048,
            2,
        )
        assert await hashing.verify(encoded, "a long enough password")
        assert not await hashing.verify(encoded, "another password")
    finally:
        hashing.close()
