"""A device whose undelivered envelopes expired is told so with `gap` when it resumes (the real
server; the retention pass runs against its database with time passed in)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from securemsg.server.retention import RetentionService
from securemsg.settings import Settings
from securemsg.storage.database import Database
from tests.legal.conftest import World, populate
from tests.support.db import snapshot
from tests.support.server import running_server

DAY_MS = 86_400_000


async def test_a_device_resuming_after_retention_gets_gap_then_new_messages(world: World) -> None:
    await world.send("one", "two", "three")
    database = Database.open(world.server.database_url)
    try:
        later_ms = int(time.time() * 1000) + 31 * DAY_MS
        report = await RetentionService(database, Settings()).run(now_ms=later_ms)
    finally:
        await database.close()
    assert (report.deliveries, report.devices) == (3, 1)

    carl = world.carl
    attached = await carl.connect()
    assert attached["acked"] == 0
    gap = await carl.next_of("gap", "deliver", "caught_up")
    assert gap == {"type": "gap", "first": 1, "last": 3}
    assert (await carl.next_of("caught_up", "deliver"))["type"] == "caught_up"
    await world.send("four")
    deliver = await carl.next_of("deliver")
    assert deliver["seq"] == 4 and carl.open(deliver["envelope"], world.tess) == "four"
    await carl.close()


async def test_the_server_runs_retention_in_the_background(tmp_path: Path, sqlite_url: str) -> None:
    settings = {"retention_interval_seconds": 0.2, "retention_undelivered_seconds": 0.5}
    with running_server(tmp_path / "data", sqlite_url, **settings) as server:
        world = await populate(server)
        await world.send("soon gone")
        deadline = time.monotonic() + 60  # a pass is due every 0.2 s; this bounds a stuck one
        while (await snapshot(sqlite_url))["deliveries"]:
            assert time.monotonic() < deadline, "retention never ran"
            await asyncio.sleep(0.1)
        await world.carl.connect()
        gap = await world.carl.next_of("gap", "deliver", "caught_up")
        assert gap == {"type": "gap", "first": 1, "last": 1}
        await world.carl.close()
