"""A TCP proxy between the server and PostgreSQL that a test can cut or stall.

It runs its own event loop in a thread, so the test's loop (and the server, a separate process)
see it as the network. `cut()` resets every open connection and refuses new ones, as a crashed
database host or a firewall that rejects would; `stall()` keeps connections open but stops
forwarding, as a network partition that drops packets would; `restore()` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class DatabaseProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "forward"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._stopped = asyncio.Event()
        self._ready.set()
        async with server:
            await self._stopped.wait()
        for writer in list(self._writers):
            _reset(writer)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._writers.discard(end)
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            while self.mode == "stall":
                await asyncio.sleep(0.05)  # hold the bytes: nothing gets through, nothing fails
            if self.mode == "cut":
                return
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    def _call(self, mode: str) -> None:
        def apply() -> None:
            self.mode = mode
            if mode == "cut":
                for writer in list(self._writers):
                    _reset(writer)
                self._writers.clear()

        self._loop.call_soon_threadsafe(apply)

    def cut(self) -> None:
        self._call("cut")

    def stall(self) -> None:
        self._call("stall")

    def restore(self) -> None:
        self._call("forward")

    @contextlib.contextmanager
    def running(self) -> Iterator[DatabaseProxy]:
        self._thread.start()
        self._ready.wait(5)
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(5)
            self._loop.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead peer or a rejecting firewall does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()
