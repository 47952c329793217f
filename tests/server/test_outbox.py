"""The per-socket outbound queue: bounded in bytes, loses nothing it accepted."""

from __future__ import annotations

import asyncio

from securemsg.server.outbox import Outbox


async def test_offer_refuses_a_frame_that_would_exceed_the_budget() -> None:
    box = Outbox(max_bytes=10)
    assert box.offer("aaaaaa")
    assert not box.offer("bbbbbb")
    assert box.queued_bytes == 6


async def test_a_frame_larger_than_the_budget_goes_through_alone() -> None:
    box = Outbox(max_bytes=4)
    assert box.offer("x" * 100)
    assert await box.get() == "x" * 100


async def test_put_waits_for_room_and_never_drops_a_frame() -> None:
    box = Outbox(max_bytes=10)
    frames = [f"frame{i:03d}" for i in range(50)]  # 8 bytes each: one fits at a time

    async def producer() -> None:
        for frame in frames:
            await box.put(frame)

    task = asyncio.create_task(producer())
    got = [await box.get() for _ in frames]
    await task
    assert got == frames
    assert box.queued_bytes == 0


async def test_close_drops_queued_frames_and_wakes_waiters() -> None:
    box = Outbox(max_bytes=10)
    box.offer("123456789")
    waiter = asyncio.create_task(box.put("abcdefgh"))
    await asyncio.sleep(0)
    box.close()
    await asyncio.wait_for(waiter, 1)
    assert await box.get() is None
