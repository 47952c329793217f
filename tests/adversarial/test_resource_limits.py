"""Resource limits under attack: what a client can make the server hold, and for how long.

Each test attacks one real server process and checks three things: the attack is cut off at its
documented bound, the server's resident memory (VmRSS from /proc) stays within a stated budget,
and a therapist-client pair keeps exchanging messages meanwhile. Bounds and measured numbers are
in docs/threat-model.md ("Resource bounds").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from securemsg.protocol.frames import ATTACH_PURPOSE, b64
from tests.adversarial.actors import provision_now, rss_kib, server_pid, serving, tracebacks
from tests.adversarial.probe import delivery_latencies
from tests.adversarial.rawsocket import CONTINUATION, TEXT, frame, handshake
from tests.support.peer import Peer
from tests.support.server import ServerProcess
from tests.support.ws import open_socket, recv_json, until_closed

# Service for others during an attack: every probe message arrives, the slowest within this.
SERVICE_P100_SECONDS = 2.0


@dataclass
class Pair:
    tess: Peer
    carl: Peer
    conversation: uuid.UUID

    async def attach(self) -> None:
        await self.tess.connect()
        await self.carl.connect()
        await self.carl.next_of("caught_up")

    async def still_served(self, count: int = 20) -> float:
        """Exchange `count` messages; return the slowest send -> deliver time."""
        latencies = await delivery_latencies(
            self.tess, self.carl, self.conversation, count=count, interval=0.02
        )
        assert len(latencies) == count
        assert max(latencies) < SERVICE_P100_SECONDS, sorted(latencies)[-5:]
        return max(latencies)

    async def close(self) -> None:
        await self.tess.close()
        await self.carl.close()


def _pair(server: ServerProcess, **accounts: str) -> Pair:
    (conversation,) = provision_now(
        server, {"tess": "therapist", "carl": "client", **accounts}, [("tess", "carl")]
    )
    tess, carl = Peer(server, "tess").login(), Peer(server, "carl").login()
    for peer in (tess, carl):
        assert peer.register().status_code == 200
    return Pair(tess, carl, conversation)


@contextlib.contextmanager
def _server(tmp_path: Path, **settings: object) -> Iterator[ServerProcess]:
    with serving(tmp_path, **settings) as server:
        yield server
        assert tracebacks(server.log()) == []


# -- slowloris -------------------------------------------------------------------------------


async def _slowloris(port: int, kind: str, stop: asyncio.Event) -> float:
    """One attacking connection; return how long the server kept it open (seconds)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    drip = {
        "silent": [],
        "head": [b"GET /v1/ws HTTP/1.1\r\n", b"Host: x\r\n", b"Upgrade: websocket\r\n"]
        + [b"X-Slow: %d\r\n" % i for i in range(100)],
        "body": [
            b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        ]
        + [b'{"username":"'] * 100,
    }[kind]
    try:
        for chunk in drip:
            writer.write(chunk)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 0.25) == b"":
                    return time.monotonic() - started  # the server closed it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while await reader.read(1024) != b"" and not stop.is_set():
                    pass
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


@pytest.mark.slow
def test_slowloris_connections_are_closed_at_the_request_timeout(tmp_path: Path) -> None:
    timeout = 1.0
    with _server(tmp_path, request_timeout_seconds=timeout) as server:
        pair = _pair(server)
        pid = server_pid(server)

        async def attack() -> None:
            await pair.attach()
            baseline = rss_kib(pid)
            stop = asyncio.Event()
            kinds = ["silent", "head", "body"] * 100
            attackers = [asyncio.create_task(_slowloris(server.port, k, stop)) for k in kinds]
            await asyncio.sleep(0.5)
            peak = rss_kib(pid)
            await pair.still_served()  # while 300 connections drip
            held = await asyncio.wait_for(asyncio.gather(*attackers), 20)
            stop.set()
            # Every dripping connection was cut off at the deadline (plus scheduling slack).
            assert max(held) < timeout + 1.5, sorted(held)[-5:]
            assert (peak - baseline) < 300 * 64, (baseline, peak)  # < 64 KiB per connection
            await pair.still_served()
            await pair.close()

        asyncio.run(attack())


# -- unauthenticated sockets -----------------------------------------------------------------


@pytest.mark.slow
def test_unauthenticated_socket_floods_are_capped_per_address_and_expire_at_the_deadline(
    tmp_path: Path,
) -> None:
    with _server(tmp_path, auth_deadline_seconds=1, max_unauthenticated_sockets_per_address=8) as (
        server
    ):
        pair = _pair(server)
        pid = server_pid(server)

        async def flood() -> None:
            await pair.attach()
            baseline = rss_kib(pid)
            # One address: the cap admits 8, refuses the 9th at once with 4429.
            held = [await open_socket(server.ws_url) for _ in range(8)]
            refused = await open_socket(server.ws_url)
            assert (await until_closed(refused, timeout=5))[0] == 4429
            # Many addresses (X-Forwarded-For from 127.0.0.1, which uvicorn trusts): 50 x 8 more.
            addresses = [f"10.0.{i}.1" for i in range(50) for _ in range(8)]
            spread = await asyncio.gather(*(_open_from(server, a) for a in addresses))
            peak = rss_kib(pid)
            await pair.still_served()
            # None of them ever authenticates: all are closed at the 1 s deadline with 4408.
            started = time.monotonic()
            codes = await asyncio.gather(*(until_closed(ws, timeout=10) for ws in held + spread))
            assert {code for code, _ in codes} == {4408}
            assert time.monotonic() - started < 3
            assert (peak - baseline) < 408 * 64, (baseline, peak)
            await pair.still_served()
            await pair.close()

        asyncio.run(flood())


async def _open_from(server: ServerProcess, address: str) -> ClientConnection:
    """A socket that claims, via a proxy header from 127.0.0.1, to come from `address`."""
    return await connect(
        server.ws_url, additional_headers={"X-Forwarded-For": address}, compression=None
    )


# -- oversized and compressed frames ---------------------------------------------------------


@pytest.fixture(scope="module")
def frame_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Pair]]:
    """One server (default limits) and pair for the frame-level tests below."""
    with _server(tmp_path_factory.mktemp("frames")) as server:
        yield server, _pair(server)


def test_permessage_deflate_is_never_negotiated_and_a_compressed_bomb_is_a_protocol_error(
    frame_server: tuple[ServerProcess, Pair],
) -> None:
    server, pair = frame_server
    pid = server_pid(server)
    host, port = "127.0.0.1", server.port

    async def run() -> None:
        await pair.attach()
        # A browser-style offer: the handshake answer carries no Sec-WebSocket-Extensions.
        raw = await handshake(
            host,
            port,
            Authorization=f"Bearer {pair.carl.token}",
            Sec_WebSocket_Extensions="permessage-deflate; client_max_window_bits",
        )
        assert raw.status == 101 and "sec-websocket-extensions" not in raw.headers
        await raw.recv_frame()  # ready
        # 50 MB of JSON deflated to ~50 KB, sent as a "compressed" (RSV1) frame anyway.
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = deflate.compress(b'{"type":"ping","x":"' + b"a" * 50_000_000 + b'"}')
        bomb += deflate.flush(zlib.Z_SYNC_FLUSH)[:-4]
        before = rss_kib(pid)
        await raw.send(frame(TEXT, bomb, rsv1=True))
        assert await raw.close_code() == 1002  # protocol error: nothing was decompressed
        raw.close()
        assert rss_kib(pid) - before < 10_000
        # The websockets library's own offer is declined the same way.
        async with connect(
            server.ws_url,
            additional_headers=pair.carl.auth,
            compression="deflate",
        ) as ws:
            assert ws.protocol.extensions == []
            assert (await recv_json(ws))["type"] == "ready"
        await pair.still_served()
        await pair.close()

    asyncio.run(run())


def test_oversized_frames_close_with_1009_before_the_payload_is_read(
    frame_server: tuple[ServerProcess, Pair],
) -> None:
    """Over max_frame_bytes (128 KiB), declared in one frame or reached by fragments."""
    server, pair = frame_server
    pid = server_pid(server)
    host, port = "127.0.0.1", server.port

    async def attempt(data: bytes, *, authenticate: bool) -> int | None:
        headers = {"Authorization": f"Bearer {pair.carl.token}"} if authenticate else {}
        raw = await handshake(host, port, **headers)
        if authenticate:
            await raw.recv_frame()  # ready
        await raw.send(data)
        code = await raw.close_code()
        raw.close()
        return code

    async def run() -> None:
        await pair.attach()
        before = rss_kib(pid)
        # Only the header of a frame that claims 2**62 bytes: refused without waiting for them.
        huge = frame(TEXT, b"", declared_length=2**62)[:14]
        assert await attempt(huge, authenticate=False) == 1009
        assert await attempt(huge, authenticate=True) == 1009
        # One byte over the limit, and 5 fragments of 30 KB that add up to 150 KB.
        over = b'{"type":"ping","x":"' + b"y" * (131073 - 22) + b'"}'
        assert len(over) == 131073
        assert await attempt(frame(TEXT, over), authenticate=True) == 1009
        at_limit = await handshake(host, port, Authorization=f"Bearer {pair.carl.token}")
        await at_limit.recv_frame()  # ready
        padded_ping = b'{"type":"ping"' + b" " * (131072 - 16) + b"}"  # exactly at the limit
        await at_limit.send(frame(TEXT, padded_ping))
        assert await at_limit.recv_frame() == (TEXT, b'{"type":"pong"}')
        at_limit.close()
        fragments = [frame(TEXT, b"x" * 30_000, fin=False)]
        fragments += [frame(CONTINUATION, b"x" * 30_000, fin=i == 3) for i in range(4)]
        assert await attempt(b"".join(fragments), authenticate=True) == 1009
        assert rss_kib(pid) - before < 10_000
        await pair.still_served()
        await pair.close()

    asyncio.run(run())


def test_text_frame_that_is_not_utf8_closes_with_1007_and_logs_no_traceback(
    frame_server: tuple[ServerProcess, Pair],
) -> None:
    server, pair = frame_server

    async def run() -> None:
        raw = await handshake("127.0.0.1", server.port, Authorization=f"Bearer {pair.carl.token}")
        await raw.recv_frame()  # ready
        await raw.send(frame(TEXT, b'{"type":"ping"}\xff'))
        assert await raw.close_code() == 1007
        raw.close()
        await pair.attach()
        await pair.still_served(count=5)
        await pair.close()

    asyncio.run(run())
    assert tracebacks(server.log()) == []


# -- many sockets per account ----------------------------------------------------------------


@pytest.mark.slow
def test_many_sockets_per_account_are_capped_and_cost_bounded_memory(tmp_path: Path) -> None:
    accounts, per_account = 20, 16
    with _server(
        tmp_path, max_sockets_per_account=per_account, login_attempts_per_address=1000
    ) as server:
        names = {f"client{i:02d}": "client" for i in range(accounts)}
        pair = _pair(server, **names)
        tokens = [Peer(server, name).login().token for name in names]
        pid = server_pid(server)

        async def run() -> None:
            await pair.attach()
            await asyncio.sleep(0.2)
            baseline = rss_kib(pid)
            sockets: list[ClientConnection] = []
            for token in tokens:  # sequentially per account: 16 at a time stay under the
                batch = await asyncio.gather(  # per-address cap on unauthenticated sockets
                    *(open_socket(server.ws_url, token=token) for _ in range(per_account))
                )
                for ws in batch:
                    assert (await recv_json(ws))["type"] == "ready"
                sockets += batch
                extra = await open_socket(server.ws_url, token=token)
                assert (await until_closed(extra, timeout=5))[0] == 4429
            await asyncio.sleep(0.5)
            grown = rss_kib(pid) - baseline
            per_socket = grown / len(sockets)
            print(f"\n{len(sockets)} sockets: +{grown} KiB RSS, {per_socket:.1f} KiB per socket")
            assert per_socket < 64, per_socket  # DESIGN §11: ~25 KiB measured for sansio
            slowest = await pair.still_served()
            print(f"slowest delivery with {len(sockets)} sockets open: {slowest * 1000:.1f} ms")
            await asyncio.gather(*(ws.close() for ws in sockets))
            await pair.close()

        asyncio.run(run())


# -- slow readers ----------------------------------------------------------------------------


async def _attach_over_a_small_buffer(peer: Peer) -> None:
    """Attach `peer` over a socket whose receive buffer is fixed at 64 KiB before it connects
    (autotuning here grows it to 32 MB, and the kernel would quietly absorb what the reader
    does not read; shrinking it later makes the kernel drop data and stall the connection)."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
    connection.setblocking(False)
    await asyncio.get_running_loop().sock_connect(connection, ("127.0.0.1", peer.server.port))
    peer.ws = await open_socket(peer.server.ws_url, token=peer.token, sock=connection)
    ready = await recv_json(peer.ws)
    challenge = base64.b64decode(ready["challenge"])
    signature = peer.device.sign(ATTACH_PURPOSE, challenge + peer.device_id.bytes)
    await peer.ws.send(
        json.dumps({"type": "attach", "device": str(peer.device_id), "signature": b64(signature)})
    )
    assert (await recv_json(peer.ws))["type"] == "attached"


async def _close_code(peer: Peer) -> object:
    """The code the server closed `peer`'s socket with, or what happened instead."""
    assert peer.ws is not None
    try:
        code, seen = await until_closed(peer.ws, timeout=20)
    except TimeoutError:
        return "still open"
    return code if code == 4503 else (code, seen[-2:])


@pytest.mark.slow
def test_many_slow_readers_are_cut_off_while_others_keep_being_served(tmp_path: Path) -> None:
    """One client attaches 8 devices and reads nothing while 88 MB is sent to them: each is cut
    off with 4503, whether its queue overflowed during live pushes or it stalled while catching
    up (for `slow_reader_seconds`)."""
    queue_bytes, readers = 262_144, 8
    with _server(
        tmp_path,
        outbound_queue_bytes=queue_bytes,
        slow_reader_seconds=1,  # a reader catching up is cut off after 1 s without room
        send_rate_per_second=100_000,
        send_burst=100_000,
    ) as server:
        (hoarded,) = provision_now(
            server, {"theo": "therapist", "hoarder": "client"}, [("theo", "hoarder")]
        )
        pair = _pair(server)
        theo = Peer(server, "theo").login()
        assert theo.register().status_code == 200
        devices = [Peer(server, "hoarder").login() for _ in range(readers)]
        first = devices[0]
        extra = [(d.device_id, d.device) for d in devices[1:]]
        assert first.register(extra=extra).status_code == 200
        for device in devices[1:]:
            device.identity, device.account_id = first.identity, first.account_id
        pid = server_pid(server)

        async def run() -> None:
            await pair.attach()
            await theo.connect()
            for device in devices:
                await _attach_over_a_small_buffer(device)  # then never read from again
            await asyncio.sleep(0.3)
            baseline = rss_kib(pid)
            recipients = {d.device_id: d.device.encryption_key for d in devices}
            payload = os.urandom(2500).hex()  # 5 KB plaintext: ~11 KB base64 per delivery
            peak = baseline
            for _burst in range(20):  # 11 MB per reader: more than its kernel buffers hold
                for _ in range(50):
                    await theo.send_raw(theo.seal(hoarded, recipients, payload))
                for _ in range(50):
                    reply = await theo.next_of("accepted", "error")
                    assert reply["type"] == "accepted", reply
                peak = max(peak, rss_kib(pid))
            slowest = await pair.still_served()
            # Past slow_reader_seconds: every reader must be cut off before anyone reads again.
            await asyncio.sleep(1.5)
            codes = [await _close_code(d) for d in devices]
            assert codes == [4503] * readers, codes
            # 1000 x 8 deliveries of ~11 KB (88 MB) went to readers that read nothing.
            grown = peak - baseline
            print(f"\nslow readers: +{grown} KiB RSS peak; others' slowest {slowest * 1000:.0f} ms")
            assert grown < readers * queue_bytes // 1024 * 4 + 20_000, (baseline, peak)
            await theo.close()
            await pair.close()

        asyncio.run(run())
