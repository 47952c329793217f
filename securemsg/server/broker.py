"""Cross-node notifications: "something new was committed for device X".

The database is the source of truth; a notification only wakes a socket's pump, which reads the
device's queue from its cursor, so a lost notification delays nothing beyond the next wake.
`LocalBroker` is for one process; `RedisBroker` fans out across nodes over Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("securemsg.broker")

CHANNEL = "securemsg:v1:devices"


class Broker(Protocol):
    async def start(self, on_wake: Callable[[list[uuid.UUID]], None]) -> None: ...

    def publish(self, device_ids: Iterable[uuid.UUID]) -> None: ...

    async def stop(self) -> None: ...


class LocalBroker:
    """One process: the hub already delivered everything in memory."""

    async def start(self, on_wake: Callable[[list[uuid.UUID]], None]) -> None:
        return None

    def publish(self, device_ids: Iterable[uuid.UUID]) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisBroker:
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url)
        self._node = uuid.uuid4().hex  # our own messages are already delivered locally
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    async def start(self, on_wake: Callable[[list[uuid.UUID]], None]) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)
        self._task = asyncio.get_running_loop().create_task(self._listen(pubsub, on_wake))

    async def _listen(self, pubsub: Any, on_wake: Callable[[list[uuid.UUID]], None]) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    node, _, body = bytes(message["data"]).partition(b" ")
                    if node.decode() == self._node:
                        continue
                    ids = [uuid.UUID(hex=part) for part in body.decode().split(",") if part]
                    on_wake(ids)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening through Redis restarts
                log.warning("redis subscription lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(CHANNEL)

    def publish(self, device_ids: Iterable[uuid.UUID]) -> None:
        body = ",".join(sorted({d.hex for d in device_ids}))
        if not body:
            return
        task = asyncio.get_running_loop().create_task(self._publish(f"{self._node} {body}"))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, payload: str) -> None:
        try:
            await self._redis.publish(CHANNEL, payload)
        except Exception as exc:  # noqa: BLE001 - a lost wake-up is recovered by the cursor
            log.warning("redis publish failed (%s)", type(exc).__name__)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
