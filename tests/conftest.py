"""Shared fixtures: a database URL per backend, and the real server process on it.

SQLite always runs. PostgreSQL runs when SECUREMSG_TEST_POSTGRES_URL names a server (each test
gets a fresh database there); otherwise those parameters are skipped with the reason shown.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, running_server

POSTGRES_ENV = "SECUREMSG_TEST_POSTGRES_URL"
REDIS_ENV = "SECUREMSG_TEST_REDIS_URL"
# Set by .ci/run: a missing service is then a failure, not a skip.
REQUIRE_ENV = "SECUREMSG_TEST_REQUIRE_SERVICES"


def _missing(variable: str, example: str) -> None:
    message = f"needs {variable} (e.g. {example})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {variable} is not set")
    pytest.skip(message)


def _admin_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_url(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _fresh_postgres_database() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        _missing(POSTGRES_ENV, "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
        raise AssertionError("unreachable")
    name = f"securemsg_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_pg(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'securemsg.db'}"
    else:
        yield from _fresh_postgres_database()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (for tests that only make sense there)."""
    yield from _fresh_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'securemsg.db'}"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        _missing(REDIS_ENV, "redis://127.0.0.1:6379/0")
        raise AssertionError("unreachable")
    return url


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """The real server on every configured backend."""
    (tmp_path / "data").mkdir(exist_ok=True)
    with running_server(tmp_path / "data", database_url) as process:
        yield process


@pytest.fixture
def sqlite_server(tmp_path: Path, sqlite_url: str) -> Iterator[ServerProcess]:
    """The real server on SQLite only, for tests whose behaviour does not depend on the backend."""
    (tmp_path / "data").mkdir(exist_ok=True)
    with running_server(tmp_path / "data", sqlite_url) as process:
        yield process
