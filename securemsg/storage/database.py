"""The database handle: engine setup for SQLite and PostgreSQL, and short transactions.

Stores never open transactions themselves; services do, with `Database.read()` or
`Database.write()`, and pass the connection in. SQLite runs in WAL mode with synchronous=FULL,
and write transactions start with BEGIN IMMEDIATE so two writers never deadlock on upgrade.
On PostgreSQL, `serialise_writers` takes a transaction-scoped advisory lock so delivery batches
from several nodes commit their per-device sequence numbers in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from securemsg.storage.errors import StorageError

WRITE_OPTION = "securemsg_write"
_DELIVERY_LOCK_KEY = 0x5EC0_4E55  # arbitrary, fixed: the advisory lock id for delivery batches


class Database:
    """An async engine plus the transaction discipline every store relies on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str, *, echo: bool = False) -> Database:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
            kwargs["pool_pre_ping"] = True
        engine = create_async_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            _configure_sqlite(engine)
        return cls(engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A short read transaction."""
        async with self._transaction(write=False) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A short write transaction: committed on exit, rolled back on any exception."""
        async with self._transaction(write=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{WRITE_OPTION: write})
                async with conn.begin():
                    yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageError(f"database unavailable: {type(exc).__name__}") from exc

    async def serialise_writers(self, conn: AsyncConnection) -> None:
        """Order delivery batches across processes (SQLite already has one writer)."""
        if self.dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DELIVERY_LOCK_KEY}
            )

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN IMMEDIATE is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
