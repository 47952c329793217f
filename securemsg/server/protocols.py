"""uvicorn's HTTP/1.1 (h11) and WebSocket (websockets-sansio) protocols, adapted for securemsg.

Two fixes for untrusted clients (tests/adversarial/test_resource_limits.py):

- a deadline for each HTTP request to arrive: uvicorn waits forever for a request head or body
  dripped a byte at a time (slowloris), holding a connection per attacker socket;
- a quiet 1007 close for a text frame that is not UTF-8: uvicorn logs a traceback for each.

And one for throughput: uvicorn writes each WebSocket frame to the socket as it is sent, one
`send()` system call per frame; under load that was the event loop's largest single cost
(bench/README.md). `CorkedTransport` gathers what one socket is sent during an event-loop turn
(a batch's `accepted` replies, its deliveries to a device) into one write at the end of the turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class CorkedTransport:
    """A transport whose writes in one event-loop turn reach the socket as one write, in order.

    At most `FLUSH_BYTES` wait for the turn's end: past that they are written at once, so flow
    control (`pause_writing`, from the wrapped transport) still stops a sender to a socket that
    does not read after about as many bytes as without the cork. Everything else is the wrapped
    transport's (`pause_reading`, `get_extra_info`, ...). `close` and `write_eof` write what is
    gathered first; `abort` drops it, as the wrapped transport would; `writelines` gathers too,
    and the write buffer size counts what is gathered.
    """

    FLUSH_BYTES = 65536

    __slots__ = ("_gathered", "_gathered_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._gathered: list[bytes] | None = None  # None while nothing waits for the turn's end
        self._gathered_bytes = 0

    def write(self, data: bytes) -> None:
        if self._gathered is None:
            self._gathered = [data]
            self._gathered_bytes = len(data)
            self._loop.call_soon(self._flush)
        else:
            self._gathered.append(data)
            self._gathered_bytes += len(data)
        if self._gathered_bytes >= self.FLUSH_BYTES:
            self._flush()  # the turn's end still comes, and finds nothing to write

    def writelines(self, lines: Iterable[bytes]) -> None:
        self.write(b"".join(lines))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (
            self._gathered_bytes if self._gathered is not None else 0
        )

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._gathered = None
        self._transport.abort()

    def _flush(self) -> None:
        gathered, self._gathered = self._gathered, None
        if gathered and not self._transport.is_closing():  # closing: the peer is gone
            self._transport.write(gathered[0] if len(gathered) == 1 else b"".join(gathered))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocols(request_timeout: float) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The protocol classes `securemsg serve` hands to uvicorn (see the module docstring)."""

    class HttpProtocol(H11Protocol):
        _request_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # the first request must arrive in time too

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # these bytes start a request (a no-op if one is under way)
            super().data_received(data)
            switched = self.transport.get_protocol() is not self
            if switched or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()  # the request is in (or the WebSocket protocol took over)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._request_timer is None:
                self._request_timer = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def _expired(self) -> None:
            self._request_timer = None
            if self.transport.get_protocol() is self and not self.transport.is_closing():
                self.transport.close()

    class WebSocketProtocol(WebSocketsSansIOProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.WriteTransport)
            corked = CorkedTransport(transport, asyncio.get_running_loop())
            super().connection_made(cast(asyncio.Transport, corked))  # it delegates the rest

        def send_receive_event_to_app(self) -> None:
            if self.curr_msg_data_type == "text" and not self.close_sent:
                try:
                    b"".join(self.frames).decode()
                except UnicodeDecodeError:
                    self.frames = []
                    self.conn.send_close(1007, "text frame is not UTF-8")
                    self.handle_parser_exception()
                    return
            super().send_receive_event_to_app()

    return HttpProtocol, WebSocketProtocol
