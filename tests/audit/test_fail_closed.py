"""Fail-closed: when the audit insert fails, the audited operation returns an error and changes
nothing (the fault is injected with a database trigger on the real server's database)."""

from __future__ import annotations

import httpx
import pytest

from tests.audit.tamper import dialect_of, execute, fail_audit_inserts_sql, integrated
from tests.support.db import snapshot
from tests.support.peer import Peer
from tests.support.server import PASSWORD, ServerProcess


@pytest.fixture
async def failing(server: ServerProcess) -> tuple[ServerProcess, Peer, str]:
    """Accounts and a logged-in client with a registered device; then audit inserts fail."""
    server.create_account("cora", "compliance")
    server.create_account("carl", "client")
    carl = Peer(server, "carl").login()
    assert carl.register().status_code == 200
    cora = server.login("cora")
    await integrated(server.database_url)  # so the background integrator has nothing to do
    await execute(server.database_url, *fail_audit_inserts_sql(dialect_of(server.database_url)))
    return server, carl, cora


async def test_login_is_refused_and_creates_no_session(
    failing: tuple[ServerProcess, Peer, str],
) -> None:
    server, _, _ = failing
    before = await snapshot(server.database_url, exclude=())
    for password in (PASSWORD, "wrong password"):
        response = httpx.post(
            server.http_url + "/v1/login",
            json={"username": "carl", "password": password},
            timeout=10,
        )
        assert response.status_code == 503, response.text
        assert "token" not in response.text
    assert await snapshot(server.database_url, exclude=()) == before


async def test_device_change_and_logout_are_refused_and_change_nothing(
    failing: tuple[ServerProcess, Peer, str],
) -> None:
    server, carl, _ = failing
    before = await snapshot(server.database_url, exclude=())
    assert carl.register(version=2, extra=[]).status_code == 503
    response = httpx.post(server.http_url + "/v1/logout", headers=carl.auth, timeout=10)
    assert response.status_code == 503
    assert await snapshot(server.database_url, exclude=()) == before
    assert httpx.get(server.http_url + "/v1/me", headers=carl.auth, timeout=10).status_code == 200


async def test_account_change_from_the_cli_is_refused_and_changes_nothing(
    failing: tuple[ServerProcess, Peer, str],
) -> None:
    server, _, _ = failing
    before = await snapshot(server.database_url, exclude=())
    for args in (("disable", "carl"), ("revoke-sessions", "carl")):
        assert server.cli("account", *args, check=False).returncode == 3
    result = server.cli(
        "account", "create", "--role", "client", "dora", stdin=PASSWORD + "\n", check=False
    )
    assert result.returncode == 3 and "audit log refused" in result.stderr
    assert await snapshot(server.database_url, exclude=()) == before


async def test_audit_query_is_refused_without_its_own_record(
    failing: tuple[ServerProcess, Peer, str],
) -> None:
    server, carl, cora = failing
    for token in (cora, carl.token):  # the officer's query, and another role's refusal
        response = httpx.get(
            server.http_url + "/v1/audit/events",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 503
        assert "events" not in response.json()
