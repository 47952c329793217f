"""The database handle: engine setup for SQLite and PostgreSQL, and short transactions.

Stores never open transactions themselves; services do, with `Database.read()` or
`Database.write()`, and pass the connection in. SQLite runs in WAL mode with synchronous=FULL,
and write transactions start with BEGIN IMMEDIATE so two writers never deadlock on upgrade.
On PostgreSQL, `serialise_writers` takes a transaction-scoped advisory lock so delivery batches
from several nodes commit their per-device sequence numbers in order.

On a SQLite file, delivery batches don't go through the async engine at all: `write_batch` runs
each one as a single call on a writer thread with a plain sqlite3 connection (storage/writer.py),
in an urgent turn at the one writer. The other writers stay on the async engine; this process's
writers take turns (`_WriterTurns`), other processes wait in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from securemsg.storage.errors import StorageError
from securemsg.storage.messages import BatchStore
from securemsg.storage.writer import SqliteWriter, configure_connection

WRITE_OPTION = "securemsg_write"
_DELIVERY_LOCK_KEY = 0x5EC0_4E55  # arbitrary, fixed: the advisory lock id for delivery batches
POSTGRES_TIMEOUT_SECONDS = 30.0  # `?command_timeout=N` in the database URL overrides it
# The async engine's connections checkpoint the WAL by themselves only past this many pages: a
# backstop, far above what the writer thread lets the WAL grow to (storage/writer.py).
_BACKSTOP_AUTOCHECKPOINT_PAGES = 10_000

# What services type their connection parameter as (only storage/ imports SQLAlchemy).
Connection = AsyncConnection
T = TypeVar("T")


class Database:
    """An async engine plus the transaction discipline every store relies on."""

    def __init__(self, engine: AsyncEngine, *, sqlite_path: str | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._turns = _WriterTurns() if self.dialect == "sqlite" else None
        # A SQLite file (not :memory:, which a second connection would not see) gets the writer.
        self._batch_writer = SqliteWriter(sqlite_path) if sqlite_path else None

    @classmethod
    def open(cls, url: str, *, echo: bool = False) -> Database:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        sqlite_path = None
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                if not parsed.query and not database.startswith("file:"):
                    sqlite_path = database
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
            kwargs["pool_pre_ping"] = True
            if parsed.get_driver_name() == "asyncpg":
                # A database that stops answering (a network partition, a hung server) fails
                # each statement and each new connection after this long, as `unavailable`,
                # instead of silently holding every request that needs it.
                seconds = float(str(parsed.query.get("command_timeout", POSTGRES_TIMEOUT_SECONDS)))
                kwargs["connect_args"] = {"command_timeout": seconds, "timeout": seconds}
        engine = create_async_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            _configure_sqlite(engine)
        return cls(engine, sqlite_path=sqlite_path)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A short read transaction."""
        async with self._transaction(write=False) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A short write transaction: committed on exit, rolled back on any exception.

        On SQLite an `urgent` writer (a delivery batch) takes the next turn at the one writer
        before waiting ordinary ones (see `_WriterTurns`).
        """
        turn = self._turns.turn(urgent=urgent) if self._turns else contextlib.nullcontext()
        async with turn, self._transaction(write=True) as conn:
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

    @property
    def has_batch_writer(self) -> bool:
        """Whether `write_batch` is available (a SQLite file); otherwise use `write()`."""
        return self._batch_writer is not None

    async def write_batch(
        self,
        job: Callable[[BatchStore], T],
        *,
        prepare: Callable[[], object] | None = None,
        weight: int = 0,
    ) -> T:
        """Run `job(BatchStore)` as one write transaction on SQLite's writer thread.

        The transaction is BEGIN IMMEDIATE ... COMMIT around the whole call, in an urgent turn
        at the one writer; the job's result (or exception: rolled back) comes back through one
        future. `prepare()` runs first on the same thread, outside the transaction (work that
        needs no database). Both run on another thread: they must not touch the event loop or
        its futures. `weight`: about how many bytes the job writes (schedules WAL checkpoints).
        """
        writer = self._batch_writer
        if writer is None or self._turns is None:
            raise RuntimeError("write_batch needs a SQLite file database")
        async with self._turns.turn(urgent=True):
            return await writer.run(
                lambda conn: job(BatchStore(conn)), prepare=prepare, weight=weight
            )

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
        if self._batch_writer is not None:
            await asyncio.to_thread(self._batch_writer.close)
        await self.engine.dispose()


class _WriterTurns:
    """Turns at SQLite's single writer, for this process's write transactions.

    In arrival order, except that after an ordinary turn a waiting urgent writer goes first, and
    after an urgent turn a waiting ordinary one does: a delivery batch waits for at most one
    other write, and a stream of delivery batches cannot starve the other writers either.
    Waiting here costs nothing; waiting in SQLite's busy handler sleeps in growing steps (up to
    100 ms) and lets a steady stream of small writers (failed-login audit rows during a login
    flood) starve a delivery batch for seconds.
    """

    def __init__(self) -> None:
        self._held = False
        self._last_urgent = False
        self._waiting: dict[bool, collections.deque[asyncio.Future[None]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool) -> AsyncIterator[None]:
        if self._held or self._waiting[True] or self._waiting[False]:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[urgent].append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._pass_on()  # the turn had been handed to us: hand it on
                else:
                    with contextlib.suppress(ValueError):
                        self._waiting[urgent].remove(waiter)
                raise
        self._held = True
        self._last_urgent = urgent
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        for kind in (not self._last_urgent, self._last_urgent):
            queue = self._waiting[kind]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # still held: the turn passes straight over
                    return
        self._held = False


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN IMMEDIATE is ours to issue.
        dbapi_connection.isolation_level = None
        configure_connection(dbapi_connection, autocheckpoint_pages=_BACKSTOP_AUTOCHECKPOINT_PAGES)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
