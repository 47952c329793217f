"""What an attacker with the database does to the audit tables, on either backend."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database

AUDIT_TABLES = ("audit_leaves", "audit_events", "audit_nodes", "audit_checkpoints")


async def execute(database_url: str, *statements: str) -> None:
    """Run raw SQL statements in one transaction."""
    database = Database.open(database_url)
    try:
        async with database.write() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await database.close()


def drop_triggers_sql(dialect: str) -> list[str]:
    """The first thing an attacker does: remove the append-only triggers."""
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER {table}_{name} ON {table}"
            for table in AUDIT_TABLES
            for name in ("append_only", "no_truncate")
        ]
    return [
        f"DROP TRIGGER {table}_no_{operation}"
        for table in AUDIT_TABLES
        for operation in ("update", "delete")
    ]


def fail_audit_inserts_sql(dialect: str) -> list[str]:
    """An injected fault: every insert into audit_leaves fails."""
    if dialect == "postgresql":
        return [
            "CREATE FUNCTION inject_audit_failure() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected audit failure'; END $$",
            "CREATE TRIGGER inject_audit_failure BEFORE INSERT ON audit_leaves "
            "FOR EACH ROW EXECUTE FUNCTION inject_audit_failure()",
        ]
    return [
        "CREATE TRIGGER inject_audit_failure BEFORE INSERT ON audit_leaves "
        "BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END"
    ]


def dialect_of(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


async def integrated(database_url: str, *, timeout: float = 15) -> int:
    """Wait until every recorded leaf is covered by a checkpoint; return the log's size."""
    database = Database.open(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with database.read() as conn:
                tree = AuditTree(conn)
                latest = await tree.latest_checkpoint()
                size = await tree.leaf_count()
            if latest is not None and latest.size == size:
                return size
            if time.monotonic() > deadline:
                raise AssertionError(f"log of {size} leaves not integrated in {timeout} s")
            await asyncio.sleep(0.1)
    finally:
        await database.close()
