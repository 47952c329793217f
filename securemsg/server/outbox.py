"""A per-socket outbound queue bounded in bytes.

Live pushes use `offer`, which refuses when the budget is spent (the socket is then closed as a
slow reader and resumes from its cursor later); the backlog pump uses `put`, which waits for room.
Either way one socket never holds more than its budget of queued frames.

Kept small for the many idle sockets a server holds: no asyncio.Event or deque while nothing is
queued or waited for; a waiter's future is made when someone actually has to wait. `on_ready`
(optional) is called when a frame arrives in an empty queue and when the queue is closed, so the
socket can start a sender only when there is something to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Outbox:
    __slots__ = (
        "_bytes",
        "_frames",
        "_head",
        "_on_ready",
        "_readable",
        "_room",
        "closed",
        "max_bytes",
    )

    def __init__(self, max_bytes: int, on_ready: Callable[[], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._frames: list[str] = []  # frames[_head:] are queued
        self._head = 0
        self._bytes = 0
        self._on_ready = on_ready
        self._readable: asyncio.Future[None] | None = None  # the getter waiting for a frame
        self._room: asyncio.Future[None] | None = None  # putters waiting for room
        self.closed = False

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames) - self._head

    def offer(self, frame: str) -> bool:
        """Queue `frame` if it fits in the budget; False otherwise (nothing queued)."""
        if self.closed:
            return True  # a closing socket swallows frames; the cursor covers them
        if not self._fits(len(frame)):
            return False
        self._append(frame)
        return True

    async def put(self, frame: str) -> None:
        """Queue `frame`, waiting until it fits in the budget."""
        while not self.closed and not self._fits(len(frame)):
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        if not self.closed:
            self._append(frame)

    def _fits(self, size: int) -> bool:
        # A frame larger than the whole budget still goes through, alone.
        return self._head == len(self._frames) or self._bytes + size <= self.max_bytes

    def _append(self, frame: str) -> None:
        was_empty = self._head == len(self._frames)
        self._frames.append(frame)
        self._bytes += len(frame)
        if was_empty:
            _wake(self._readable)
            self._readable = None
            if self._on_ready is not None:
                self._on_ready()

    def pop(self) -> str | None:
        """The next frame, or None if none is queued (or the queue is closed)."""
        frames = self._frames
        if self._head == len(frames):
            return None
        frame = frames[self._head]
        self._head += 1
        if self._head == len(frames):
            frames.clear()
            self._head = 0
        elif self._head >= 64 and self._head * 2 >= len(frames):
            del frames[: self._head]
            self._head = 0
        self._bytes -= len(frame)
        _wake(self._room)
        self._room = None
        return frame

    async def get(self) -> str | None:
        """The next frame, or None once closed."""
        while self._head == len(self._frames):
            if self.closed:
                return None
            if self._readable is None:
                self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        return self.pop()

    def close(self) -> None:
        """Drop queued frames and wake every waiter."""
        if self.closed:
            return
        self.closed = True
        self._frames = []
        self._head = 0
        self._bytes = 0
        _wake(self._readable)
        _wake(self._room)
        self._readable = self._room = None
        if self._on_ready is not None:
            self._on_ready()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
