"""Saving the keystore in the background, in groups, and knowing what is durable.

Every change to the keystore state bumps a generation (`mark`). One task seals a snapshot and
writes it (tmp + fsync + rename, off the event loop); whoever needs a change durable before acting
on it (a send before its envelope goes on the wire, an ack after the cursor moved) awaits
`durable(generation)`. Changes made while a write is running share the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from securemsg.client.errors import KeystoreError
from securemsg.client.keystore import Keystore

RETRY_SECONDS = 1.0


class StateWriter:
    def __init__(self, keystore: Keystore, *, on_saved: Callable[[int], Awaitable[None]]) -> None:
        self.keystore = keystore
        self.on_saved = on_saved  # called with the cursor the saved snapshot holds
        self.generation = 0
        self.saved = 0
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keystore-writer")

    def mark(self) -> int:
        """Record that the state changed; return the generation that will include the change."""
        self.generation += 1
        self._wake.set()
        return self.generation

    async def durable(self, generation: int | None = None) -> None:
        """Wait until the state as of `generation` (default: now) is on disk."""
        wanted = self.generation if generation is None else generation
        if self.saved >= wanted:
            return
        if self._task is None or self._task.done():
            await self._write_once()
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        await future

    async def close(self) -> None:
        """Write what is pending and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.saved < self.generation:
            await self._write_once()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_once()
            except KeystoreError as error:
                for _, future in self._waiters:
                    if not future.done():
                        future.set_exception(error)
                self._waiters.clear()
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _write_once(self) -> None:
        generation = self.generation
        cursor = self.keystore.state.cursor
        sealed = self.keystore.snapshot()
        try:
            await asyncio.to_thread(self.keystore.write, sealed, generation)
        except OSError as error:
            raise KeystoreError(
                f"cannot write keystore {self.keystore.path}: {error.strerror}"
            ) from error
        self.saved = max(self.saved, generation)
        waiting, self._waiters = self._waiters, []
        for wanted, future in waiting:
            if wanted <= self.saved:
                if not future.done():
                    future.set_result(None)
            else:
                self._waiters.append((wanted, future))
        await self.on_saved(cursor)
