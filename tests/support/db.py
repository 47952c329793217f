"""Read a whole database, to assert that a refused request changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from securemsg.storage.database import Database
from securemsg.storage.models import metadata


async def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    database = Database.open(database_url)
    try:
        async with database.read() as conn:
            result = {}
            for table in metadata.sorted_tables:
                rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
                result[table.name] = [tuple(row) for row in rows]
            return result
    finally:
        await database.close()
