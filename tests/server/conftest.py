"""Service-level fixtures: a migrated real database and a clock tests move by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from securemsg.clock import FakeClock
from securemsg.storage import migrate
from securemsg.storage.database import Database


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database.open(database_url)
    await migrate.upgrade(db)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
