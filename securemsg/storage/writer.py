"""SQLite's batch writer: one thread, one plain `sqlite3` connection, one call per transaction.

The group commit is the hot path: every `accepted` waits for it. Through SQLAlchemy's async layer
and aiosqlite a batch transaction costs a thread round trip per statement (about 30 per batch:
8.5 ms wall for a batch of one). Here the event loop hands the whole transaction to this thread
as one job (`SqliteWriter.run`) and gets the outcome back through one future: BEGIN IMMEDIATE,
the batch's statements, COMMIT (synchronous=FULL), all on the thread (DESIGN §11: never one await
per statement; a writer thread with a plain sqlite3 connection committing whole batches).

Checkpoints are scheduled here too (DESIGN §11: SQLite p99 spikes come from auto-checkpoints
inside commits). This connection never auto-checkpoints. Between jobs the thread runs a PASSIVE
checkpoint when it has nothing else to do and its jobs have written `idle_checkpoint_bytes`
since the last one, when they have written `checkpoint_bytes` even though more jobs are waiting
(a load that never leaves it idle), and after a second without jobs if anyone wrote at all
(`PRAGMA data_version` also sees the other connections' commits). The event loop's connections
keep an automatic checkpoint, set well above these sizes, as a backstop (database.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from securemsg.storage.errors import StorageError

log = logging.getLogger("securemsg.storage.writer")

T = TypeVar("T")

IDLE_CHECKPOINT_BYTES = 1 << 20  # about 256 pages: cheap to copy while nothing waits
CHECKPOINT_BYTES = 8 << 20  # checkpoint even when busy: bounds the WAL (and a reader's scan)
IDLE_SECONDS = 1.0


def configure_connection(conn: Any, *, autocheckpoint_pages: int) -> None:
    """The pragmas every securemsg SQLite connection runs with (a DB-API connection)."""
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
    cursor.close()


class SqliteWriter:
    """Runs write transactions, one job at a time and in submission order, on its own thread."""

    def __init__(
        self,
        path: str,
        *,
        idle_checkpoint_bytes: int = IDLE_CHECKPOINT_BYTES,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.path = path
        self.idle_checkpoint_bytes = idle_checkpoint_bytes
        self.checkpoint_bytes = checkpoint_bytes
        self.idle_seconds = idle_seconds
        self.checkpoints = 0  # completed PASSIVE checkpoints (for tests and the curious)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._written = 0  # bytes written by jobs since the last checkpoint (an estimate)
        self._data_version: int | None = None

    async def run(self, job: Callable[[sqlite3.Connection], T], *, weight: int = 0) -> T:
        """`job(connection)` inside BEGIN IMMEDIATE ... COMMIT on the writer thread.

        Its result comes back; if it raises, the transaction is rolled back and the exception
        comes back instead (a `sqlite3.Error` or `OSError` as StorageError). `weight` is about how
        many bytes the job writes, for scheduling checkpoints. If the caller is cancelled the
        job still runs to its end, committed or rolled back.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StorageError("database unavailable: the writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="sqlite-writer", daemon=True
                )
                self._thread.start()
            self._jobs.put(_Job(job, weight, loop, future))
        result: T = await future
        return result

    def close(self) -> None:
        """Finish the queued jobs, checkpoint, close the connection and stop the thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                try:
                    item = self._jobs.get(timeout=self.idle_seconds)
                except queue.Empty:
                    if conn is not None and self._anyone_wrote(conn):
                        conn = self._checkpoint(conn)
                    continue
                if item is None:
                    if conn is not None:
                        self._checkpoint(conn)
                    return
                conn = self._run_job(conn, item)
                if conn is not None and (
                    self._written >= self.checkpoint_bytes
                    or (self._written >= self.idle_checkpoint_bytes and self._jobs.empty())
                ):
                    conn = self._checkpoint(conn)
        finally:
            if conn is not None:
                conn.close()

    def _run_job(self, conn: sqlite3.Connection | None, item: _Job) -> sqlite3.Connection | None:
        error: BaseException | None = None
        result: Any = None
        try:
            if conn is None:
                conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = item.job(conn)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._written += item.weight
        except (sqlite3.Error, OSError) as exc:
            error = StorageError(f"database unavailable: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            if conn is not None:  # start afresh: the connection may be what is broken
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                conn = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, not swallowed
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            item.loop.call_soon_threadsafe(_settle, item.future, error, result)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        configure_connection(conn, autocheckpoint_pages=0)
        self._data_version = None
        return conn

    def _anyone_wrote(self, conn: sqlite3.Connection) -> bool:
        """Whether anything was committed since the last checkpoint, by us or anyone else."""
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return False
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed or self._written > 0

    def _checkpoint(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            return None
        self._written = 0
        self.checkpoints += 1
        with contextlib.suppress(sqlite3.Error):
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        if busy:
            log.debug("WAL checkpoint could not finish (busy)")
        return conn


class _Job:
    __slots__ = ("future", "job", "loop", "weight")

    def __init__(
        self,
        job: Callable[[sqlite3.Connection], Any],
        weight: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.job = job
        self.weight = weight
        self.loop = loop
        self.future = future


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
