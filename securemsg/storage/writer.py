"""SQLite's batch writer: one thread, one plain `sqlite3` connection, one call per transaction.

The group commit is the hot path: every `accepted` waits for it. Through SQLAlchemy's async layer
and aiosqlite a batch transaction costs a thread round trip per statement (about 30 per batch:
8.5 ms wall for a batch of one). Here the event loop hands the whole transaction to this thread
as one job (`SqliteWriter.run`) and gets the outcome back through one future: an optional
`prepare` step (outside the transaction), BEGIN IMMEDIATE, the batch's statements, COMMIT
(synchronous=FULL), all on the thread (DESIGN §11: never one await per statement; a writer thread
with a plain sqlite3 connection committing whole batches).

WAL checkpoints never run inside a commit (DESIGN §11: SQLite p99 spikes come from auto-checkpoints
inside commits): the writer's connection has `wal_autocheckpoint=0`, and a second thread with its
own connection runs PASSIVE checkpoints beside the writer (SQLite lets a checkpoint and a writer
run at once): when jobs have written about `checkpoint_bytes` since the last one, and after a
second without commits if anyone (`PRAGMA data_version`) wrote. A PASSIVE checkpoint that runs
beside a busy writer may never catch up with it, and the WAL only starts over once one has; so
after `restart_bytes` without a complete checkpoint the writer runs one itself, between two jobs.
The event loop's connections keep an automatic checkpoint far above these sizes as a backstop
(database.py).
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

CHECKPOINT_BYTES = 2 << 20  # about 512 pages written: time for a background checkpoint
RESTART_BYTES = 16 << 20  # no complete checkpoint for this long: the writer makes one
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
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        restart_bytes: int = RESTART_BYTES,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.path = path
        self.checkpoint_bytes = checkpoint_bytes
        self.restart_bytes = restart_bytes
        self.idle_seconds = idle_seconds
        self.checkpoints = 0  # PASSIVE checkpoints run (for tests and the curious)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._checkpoint_wanted = threading.Event()
        # Bytes written by jobs (an estimate) since the last checkpoint / complete checkpoint.
        # Updated from both threads without a lock: they only schedule checkpoints.
        self._written = 0
        self._incomplete = 0

    async def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        prepare: Callable[[], object] | None = None,
        weight: int = 0,
    ) -> T:
        """`prepare()`, then `job(connection)` inside BEGIN IMMEDIATE ... COMMIT, on the thread.

        The job's result comes back; if it (or `prepare`) raises, the transaction is rolled back
        and the exception comes back instead (a `sqlite3.Error` or `OSError` as StorageError).
        `prepare` runs before BEGIN, holding no lock: for work that needs no database.
        `weight` is about how many bytes the job writes, for scheduling checkpoints. If the
        caller is cancelled the job still runs to its end, committed or rolled back.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StorageError("database unavailable: the writer is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._main, name="sqlite-writer", daemon=True),
                    threading.Thread(
                        target=self._checkpointer, name="sqlite-checkpoint", daemon=True
                    ),
                ]
                for thread in self._threads:
                    thread.start()
            self._jobs.put(_Job(job, prepare, weight, loop, future))
        result: T = await future
        return result

    def close(self) -> None:
        """Finish the queued jobs, checkpoint, close the connections and stop the threads."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        if threads:
            self._jobs.put(None)
            threads[0].join()
            self._stop.set()
            self._checkpoint_wanted.set()
            threads[1].join()

    # -- the writer thread ------------------------------------------------------------------

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                conn = self._run_job(conn, item)
                if self._written >= self.checkpoint_bytes:
                    self._checkpoint_wanted.set()
                if conn is not None and self._incomplete >= self.restart_bytes:
                    try:
                        self._checkpoint(conn)
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    def _run_job(self, conn: sqlite3.Connection | None, item: _Job) -> sqlite3.Connection | None:
        error: BaseException | None = None
        result: Any = None
        try:
            if item.prepare is not None:
                item.prepare()
            if conn is None:
                conn = self._connect(autocheckpoint_pages=0)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = item.job(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._written += item.weight
            self._incomplete += item.weight
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

    def _connect(self, *, autocheckpoint_pages: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        configure_connection(conn, autocheckpoint_pages=autocheckpoint_pages)
        return conn

    # -- the checkpoint thread --------------------------------------------------------------

    def _checkpointer(self) -> None:
        conn: sqlite3.Connection | None = None
        version: int | None = None
        try:
            while not self._stop.is_set():
                wanted = self._checkpoint_wanted.wait(self.idle_seconds)
                self._checkpoint_wanted.clear()
                if self._stop.is_set():
                    break
                try:
                    if conn is None:
                        conn = self._connect(autocheckpoint_pages=0)
                    if not wanted:  # a quiet second: checkpoint if anyone wrote meanwhile
                        now = conn.execute("PRAGMA data_version").fetchone()[0]
                        changed = version is not None and now != version
                        version = now
                        if not (changed or self._written):
                            continue
                    self._checkpoint(conn)
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    conn = None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._checkpoint(conn)  # the writer has stopped: this one completes
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """A PASSIVE checkpoint: copies what it can, never waits for readers or the writer."""
        self._written = 0
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if not busy and frames == copied:  # complete: the next transaction restarts the WAL
            self._incomplete = 0


class _Job:
    __slots__ = ("future", "job", "loop", "prepare", "weight")

    def __init__(
        self,
        job: Callable[[sqlite3.Connection], Any],
        prepare: Callable[[], object] | None,
        weight: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.job = job
        self.prepare = prepare
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
