"""Databases for tests: a fresh one per backend, and a snapshot of a whole one.

SQLite always runs. PostgreSQL runs when SECUREMSG_TEST_POSTGRES_URL names a server (each user
gets a fresh database there); otherwise it is skipped with the reason shown, or, when
SECUREMSG_TEST_REQUIRE_SERVICES=1 (.ci/run), fails.

`snapshot` reads every table, to assert that a refused request changed nothing. The audit
integrator's tables (tree nodes and checkpoints) are left out by default: the server writes them
in the background from leaves committed earlier, not in answer to any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from securemsg.storage.database import Database
from securemsg.storage.models import metadata

POSTGRES_ENV = "SECUREMSG_TEST_POSTGRES_URL"
REDIS_ENV = "SECUREMSG_TEST_REDIS_URL"
# Set by .ci/run: a missing service is then a failure, not a skip.
REQUIRE_ENV = "SECUREMSG_TEST_REQUIRE_SERVICES"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def service_url(variable: str, example: str) -> str:
    """The server the environment names, or a skip (a failure when services are required)."""
    url = os.environ.get(variable)
    if not url:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {variable} is not set")
        pytest.skip(f"needs {variable} (e.g. {example})")
    return url


async def _postgres(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(backend: str, data_dir: Path) -> Iterator[str]:
    """A database URL nobody else uses: a SQLite file in `data_dir`, or a new PostgreSQL db."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{data_dir / 'securemsg.db'}"
        return
    base = service_url(POSTGRES_ENV, "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    name = f"securemsg_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_postgres(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


BACKGROUND_TABLES = ("audit_nodes", "audit_checkpoints")


async def snapshot(
    database_url: str, *, exclude: tuple[str, ...] = BACKGROUND_TABLES
) -> dict[str, list[tuple[Any, ...]]]:
    database = Database.open(database_url)
    try:
        async with database.read() as conn:
            result = {}
            for table in metadata.sorted_tables:
                if table.name in exclude:
                    continue
                rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
                result[table.name] = [tuple(row) for row in rows]
            return result
    finally:
        await database.close()
