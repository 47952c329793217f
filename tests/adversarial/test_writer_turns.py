"""Turns at SQLite's one writer: a delivery batch waits for at most one other write, a stream of
delivery batches cannot starve the other writers, and a cancelled waiter never wedges the turn.

(Found by the login flood: failed-login audit writes queued in SQLite's busy handler starved
delivery batches for seconds; see test_login_flood.py.)
"""

from __future__ import annotations

import asyncio

from securemsg.storage.database import _WriterTurns


async def _take(turns: _WriterTurns, name: str, urgent: bool, order: list[str]) -> None:
    async with turns.turn(urgent=urgent):
        order.append(name)
        await asyncio.sleep(0)


async def _queue(
    turns: _WriterTurns, first_urgent: bool, waiting: list[tuple[str, bool]]
) -> list[str]:
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.turn(urgent=first_urgent):
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = []
    for name, urgent in waiting:
        tasks.append(asyncio.create_task(_take(turns, name, urgent, order)))
        await asyncio.sleep(0)  # arrive in this order
    release.set()
    await asyncio.gather(held, *tasks)
    return order


async def test_a_delivery_batch_goes_before_writes_that_queued_earlier() -> None:
    waiting = [("audit1", False), ("audit2", False), ("audit3", False), ("delivery", True)]
    order = await _queue(_WriterTurns(), False, waiting)
    assert order == ["delivery", "audit1", "audit2", "audit3"]


async def test_delivery_batches_and_other_writes_alternate_so_neither_starves() -> None:
    waiting = [("d1", True), ("d2", True), ("d3", True), ("a1", False), ("a2", False)]
    order = await _queue(_WriterTurns(), True, waiting)
    assert order == ["a1", "d1", "a2", "d2", "d3"]


async def test_a_waiter_cancelled_before_or_after_its_turn_came_does_not_wedge_the_turn() -> None:
    turns = _WriterTurns()
    order: list[str] = []
    release = asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}

    async def holder() -> None:
        async with turns.turn(urgent=False):
            await release.wait()
        # The turn was just handed to "handed" (the urgent waiter is gone); cancel it before
        # it could run: it must pass the turn on.
        tasks["handed"].cancel()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    for name, urgent in (("gone", True), ("handed", False), ("last", False)):
        tasks[name] = asyncio.create_task(_take(turns, name, urgent, order))
    await asyncio.sleep(0)
    tasks["gone"].cancel()  # cancelled while waiting
    await asyncio.sleep(0)
    release.set()
    await held
    await asyncio.wait_for(tasks["last"], 1)
    assert order == ["last"]
    assert tasks["handed"].cancelled() and tasks["gone"].cancelled()
    async with asyncio.timeout(1), turns.turn(urgent=True):
        pass  # and the turn is free again
