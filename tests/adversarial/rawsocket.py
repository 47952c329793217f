"""A WebSocket client at the byte level: handshakes and frames no well-behaved library sends.

Used to offer permessage-deflate, set RSV bits, declare absurd lengths, split a message into
fragments, or drip a request slowly. Frames from the client are masked as RFC 6455 requires.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); (CLOSE, b"") when the stream ends."""
        async with asyncio.timeout(timeout):
            try:
                head = await self.reader.readexactly(2)
            except (asyncio.IncompleteReadError, ConnectionError):
                return CLOSE, b""
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return opcode, await self.reader.readexactly(length)

    async def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server's close frame; its code (None if the stream just ended)."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def close(self) -> None:
        self.writer.close()


def upgrade_request(host: str, port: int, *, path: str = "/v1/ws", **headers: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def handshake(host: str, port: int, **headers: str) -> RawSocket:
    """Open a WebSocket by hand; `headers` are extra request headers (underscores -> dashes)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(upgrade_request(host, port, **headers))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response = {}
    for line in header_lines:
        if ":" in line:
            name, _, value = line.partition(":")
            response[name.strip().lower()] = value.strip()
    return RawSocket(reader, writer, int(status_line.split()[1]), response)


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    declared_length: int | None = None,
) -> bytes:
    """One masked client frame; `declared_length` lies about the payload length."""
    length = len(payload) if declared_length is None else declared_length
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked
