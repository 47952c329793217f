"""A per-socket outbound queue bounded in bytes.

Live pushes use `offer`, which refuses when the budget is spent (the socket is then closed as a
slow reader and resumes from its cursor later); the backlog pump uses `put`, which waits for room.
Either way one socket never holds more than its budget of queued frames.
"""

from __future__ import annotations

import asyncio
import collections


class Outbox:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: collections.deque[str] = collections.deque()
        self._bytes = 0
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    @property
    def queued_bytes(self) -> int:
        return self._bytes

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
            self._room.clear()
            await self._room.wait()
        if not self.closed:
            self._append(frame)

    def _fits(self, size: int) -> bool:
        # A frame larger than the whole budget still goes through, alone.
        return not self._frames or self._bytes + size <= self.max_bytes

    def _append(self, frame: str) -> None:
        self._frames.append(frame)
        self._bytes += len(frame)
        self._readable.set()

    async def get(self) -> str | None:
        """The next frame, or None once closed."""
        while not self._frames:
            if self.closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        frame = self._frames.popleft()
        self._bytes -= len(frame)
        self._room.set()
        return frame

    def close(self) -> None:
        """Drop queued frames and wake every waiter."""
        self.closed = True
        self._frames.clear()
        self._bytes = 0
        self._readable.set()
        self._room.set()
