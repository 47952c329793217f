"""Alembic migrations create exactly the schema the models describe, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from securemsg.storage import migrate
from securemsg.storage.database import Database
from securemsg.storage.models import metadata


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    database = Database.open(database_url)
    try:
        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == migrate.head_revision()

        def diff(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with database.read() as conn:
            assert await conn.run_sync(diff) == []
        await migrate.upgrade(database)  # idempotent
    finally:
        await database.close()
