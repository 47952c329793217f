"""CorkedTransport: what a WebSocket is sent in one event-loop turn goes out as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from securemsg.server.protocols import CorkedTransport


class RecordingTransport(asyncio.WriteTransport):
    """asyncio's side of the contract: records writes and closes, says when it is closing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default


async def test_writes_in_one_turn_reach_the_socket_as_one_write_in_order() -> None:
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"accepted 1|")
    corked.write(b"accepted 2|")
    corked.write(b"deliver 3")
    assert inner.writes == []  # nothing until the turn ends
    await asyncio.sleep(0)
    assert inner.writes == [b"accepted 1|accepted 2|deliver 3"]
    corked.write(b"next turn")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next turn"]


async def test_past_flush_bytes_what_is_gathered_is_written_at_once() -> None:
    # Flow control must still see a socket that does not read: its sender is paused by the
    # wrapped transport after about as many bytes as without the cork, not after a whole turn.
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    frame = b"x" * 1000
    for _ in range(200):
        corked.write(frame)
    assert len(inner.writes) == 3  # 66 frames each time 65,536 bytes are passed
    assert all(len(w) == 66_000 for w in inner.writes)
    await asyncio.sleep(0)
    assert b"".join(inner.writes) == frame * 200


async def test_close_writes_what_is_gathered_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = RecordingTransport()
    corked = CorkedTransport(inner, loop)
    corked.write(b"close frame")
    corked.close()
    assert inner.events == ["write", "close"]
    assert inner.writes == [b"close frame"]

    aborted = RecordingTransport()
    corked = CorkedTransport(aborted, loop)
    corked.write(b"never sent")
    corked.abort()
    await asyncio.sleep(0)
    assert aborted.events == ["abort"]


async def test_writelines_eof_and_buffer_size_see_what_is_gathered() -> None:
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"a")
    corked.writelines([b"b", b"c"])
    assert corked.get_write_buffer_size() == 7 + 3  # the wrapped transport's and the gathered
    corked.write_eof()
    assert inner.events == ["write", "eof"]
    assert inner.writes == [b"abc"]


async def test_nothing_is_written_to_a_transport_already_closing() -> None:
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"to a peer that is gone")
    inner.closing = True  # the connection was lost during the turn
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_everything_else_is_the_wrapped_transports() -> None:
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    assert corked.get_extra_info("peername") == ("127.0.0.1", 4242)
    assert corked.is_closing() is False
