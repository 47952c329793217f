"""Things that sit between the SDK and the real server in tests.

`TcpForwarder` passes bytes through to wherever the server currently listens (it gets a new port
on every restart). `HostileRelay` is a WebSocket man-in-the-middle playing a malicious server:
it renumbers `deliver` frames so the sequence numbers look perfect while it drops, duplicates,
reorders or corrupts the envelopes inside them, and translates acknowledgements back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class TcpForwarder:
    def __init__(self, target_port: Callable[[], int]) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port())
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


# A tampering policy sees each `deliver` frame (with the index it has among the deliveries) and
# returns the frames to pass on instead; HostileRelay numbers what it passes on.
Policy = Callable[[int, dict[str, Any]], list[dict[str, Any]]]


def drop(index: int) -> Policy:
    return lambda i, frame: [] if i == index else [frame]


def duplicate(index: int) -> Policy:
    return lambda i, frame: [frame, frame] if i == index else [frame]


def swap_with_next(index: int) -> Policy:
    held: list[dict[str, Any]] = []

    def policy(i: int, frame: dict[str, Any]) -> list[dict[str, Any]]:
        if i == index:
            held.append(frame)
            return []
        if i == index + 1:
            return [frame, *held]
        return [frame]

    return policy


def corrupt(index: int, offset: int) -> Policy:
    """Flip one bit of the `index`th envelope at byte `offset` from its end (negative: from the
    end; the signature is the last 64 bytes, the body before it)."""

    def policy(i: int, frame: dict[str, Any]) -> list[dict[str, Any]]:
        if i != index:
            return [frame]
        data = bytearray(base64.b64decode(frame["envelope"]))
        data[offset] ^= 0x01
        return [{**frame, "envelope": base64.b64encode(bytes(data)).decode("ascii")}]

    return policy


class HostileRelay:
    """`policy` rewrites deliveries; with `cut_after_accepted`, the first N `accepted` replies
    are swallowed and the connection is cut right after the server sent them (the reply lost on
    the way, as a network failure would lose it)."""

    def __init__(
        self, upstream_ws_url: str, policy: Policy, *, cut_after_accepted: int = 0
    ) -> None:
        self.upstream = upstream_ws_url
        self.policy = policy
        self.cuts_left = cut_after_accepted
        self.port = 0
        self._server: Server | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client: ServerConnection) -> None:
        delivered = 0  # deliveries seen from the server
        out_seq = 0  # sequence numbers as the client sees them
        server_seq_of: dict[int, int] = {}  # client seq -> server seq it stands for
        async with connect(self.upstream, compression=None) as server:

            async def to_server() -> None:
                async for text in client:
                    frame = json.loads(text)
                    if frame["type"] == "ack":
                        frame["seq"] = max(
                            (s for c, s in server_seq_of.items() if c <= frame["seq"]), default=0
                        )
                    await server.send(json.dumps(frame))

            async def to_client() -> None:
                nonlocal delivered, out_seq
                async for text in server:
                    frame = json.loads(text)
                    if frame["type"] == "deliver":
                        delivered += 1
                        for passed in self.policy(delivered, frame):
                            out_seq += 1
                            server_seq_of[out_seq] = passed["seq"]
                            await client.send(json.dumps({**passed, "seq": out_seq}))
                        continue
                    if frame["type"] == "caught_up":
                        frame["seq"] = out_seq
                    if frame["type"] == "accepted" and self.cuts_left > 0:
                        self.cuts_left -= 1
                        await client.close()
                        return
                    await client.send(json.dumps(frame))

            tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
