"""Every SQLite connection securemsg opens runs in WAL mode with synchronous=FULL: an `accepted`
is only sent after a commit that survives power loss (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

from securemsg.storage.database import Database
from securemsg.storage.writer import SqliteWriter

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


async def test_engine_connections_use_wal_and_synchronous_full(tmp_path: Path) -> None:
    database = Database.open(f"sqlite+aiosqlite:///{tmp_path / 'securemsg.db'}")
    try:
        for transaction in (database.read, database.write):
            async with transaction() as conn:
                mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
                synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            assert (mode, synchronous, foreign_keys) == ("wal", FULL, 1)
    finally:
        await database.close()


async def test_the_batch_writers_connection_uses_wal_and_synchronous_full(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "securemsg.db"))
    try:
        pragmas = await writer.run(
            lambda conn: tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "wal_autocheckpoint")
            )
        )
    finally:
        writer.close()
    assert pragmas == ("wal", FULL, 0)  # checkpoints run beside the writer, never in a commit
