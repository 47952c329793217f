"""Audit storage fixtures: a migrated real database (each backend) and a fixed signing key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from securemsg.audit.note import NoteSigner
from securemsg.crypto.signing import SigningKey
from securemsg.storage import migrate
from securemsg.storage.database import Database

ORIGIN = "audit.test/securemsg"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database.open(database_url)
    await migrate.upgrade(db)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, SigningKey.from_seed(bytes(range(32))))
