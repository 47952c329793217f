"""Shared fixtures: a database URL per backend, and the real server process on it.

SQLite always runs. PostgreSQL runs when SECUREMSG_TEST_POSTGRES_URL names a server (each test
gets a fresh database there); otherwise those parameters are skipped with the reason shown
(tests/support/db.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.db import BACKENDS, REDIS_ENV, fresh_database, service_url
from tests.support.server import ServerProcess, running_server


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path / "data") as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database (for tests that only make sense there)."""
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'securemsg.db'}"


@pytest.fixture
def redis_url() -> str:
    return service_url(REDIS_ENV, "redis://127.0.0.1:6379/0")


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """The real server on every configured backend."""
    with running_server(tmp_path / "data", database_url) as process:
        yield process


@pytest.fixture(scope="module", params=BACKENDS)
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server per test module and backend, shared by tests that neither change the
    server's settings nor leave state another test could trip on (each asserts on what it made).
    Login limits are raised: the tests log in many times from one address in a minute."""
    data_dir = tmp_path_factory.mktemp("data")
    with (
        fresh_database(request.param, data_dir) as url,
        running_server(
            data_dir, url, login_attempts_per_address=10_000, login_attempts_per_account=10_000
        ) as process,
    ):
        yield process


@pytest.fixture
def sqlite_server(tmp_path: Path, sqlite_url: str) -> Iterator[ServerProcess]:
    """The real server on SQLite only, for tests whose behaviour does not depend on the backend."""
    with running_server(tmp_path / "data", sqlite_url) as process:
        yield process
