"""Read a whole database, to assert that a refused request changed nothing.

The audit integrator's tables (tree nodes and checkpoints) are left out by default: the server
writes them in the background from leaves committed earlier, not in answer to any request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from securemsg.storage.database import Database
from securemsg.storage.models import metadata

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
