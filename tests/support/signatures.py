"""Waiting for signature worker processes (securemsg/server/signatures.py) to come up."""

from __future__ import annotations

import asyncio

from securemsg.server.signatures import SignatureWorkers


async def workers_up(workers: SignatureWorkers, count: int, timeout: float = 10) -> None:
    """Until `count` workers are idle (a worker takes about 60 ms of CPU to start)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while workers.idle < count:
        if loop.time() > deadline:
            raise AssertionError(f"{count} signature workers did not come up in {timeout:g} s")
        await asyncio.sleep(0.02)
