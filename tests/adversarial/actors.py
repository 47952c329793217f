"""Servers, accounts and conversations for the adversarial suite.

Accounts are provisioned straight through `AdminService` on the server's own database (the CLI
costs a process start per account); the server itself always runs as the real `securemsg serve`
process. `serving` yields that process on SQLite or on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess, provision, run_blocking, running_server

POSTGRES_ENV = "SECUREMSG_TEST_POSTGRES_URL"
REQUIRE_ENV = "SECUREMSG_TEST_REQUIRE_SERVICES"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
# Argon2id as deployed (tests.support.server.FAST_ARGON2 is what the tests' server runs).
REAL_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456}


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {POSTGRES_ENV} is not set")
        pytest.skip(f"needs {POSTGRES_ENV}")
    return url


async def _postgres(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A database URL nobody else uses: a SQLite file in `directory`, or a new PostgreSQL db."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'securemsg.db'}"
        return
    base = postgres_base_url()
    name = f"securemsg_adv_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_postgres(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def serving(directory: Path, backend: str = "sqlite", **settings: Any) -> Iterator[ServerProcess]:
    """The real server process on a fresh database of `backend`, with these settings."""
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    with fresh_database(backend, data) as url, running_server(data, url, **settings) as server:
        yield server


def provision_now(
    server: ServerProcess,
    accounts: Mapping[str, str],
    conversations: Sequence[tuple[str, str]] = (),
    **options: Any,
) -> list[uuid.UUID]:
    """Provision accounts and conversations from synchronous code (fixtures); returns the
    conversation ids."""
    return run_blocking(provision(server.database_url, accounts, conversations, **options))[1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def server_pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def tracebacks(log: str) -> list[str]:
    """Each traceback in a server log, with the line that introduced it."""
    lines = log.splitlines()
    return [
        "\n".join(lines[max(0, i - 1) : i + 12])
        for i, line in enumerate(lines)
        if line.startswith("Traceback")
    ]
