"""Crashes and storage faults under load: nothing acknowledged is lost, nothing is stored twice,
errors are the documented `unavailable`, and service comes back by itself.

- SIGKILL while several devices send: every `accepted` survives; after clients retry what was
  never acknowledged (identical bytes), each recipient device holds each message under exactly
  one sequence number, numbered without gaps.
- PostgreSQL behind a TCP proxy that the test cuts (connections reset, new ones refused) or
  stalls (bytes held, nothing refused; only the statement timeout can tell): sends get
  `unavailable` and nothing is stored; service resumes when the proxy forwards again, on the
  same sockets.
- SQLite whose writes fail: the server process gets a file-size limit (RLIMIT_FSIZE, set on the
  running process with prlimit) so every write that grows the WAL fails with EFBIG, which SQLite
  reports as an I/O error; lifting the limit is "the disk is back". This needs no privileges.
- SQLite on a full disk: the database lives on a 2 MiB tmpfs; writes fail with ENOSPC, which
  SQLite reports as SQLITE_FULL; remounting it larger is "space was freed". Needs root (mount);
  skipped with the reason shown otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import sqlite3
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed

from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from tests.adversarial.actors import provision_now, server_pid, serving, tracebacks
from tests.adversarial.dbproxy import DatabaseProxy
from tests.support.db import BACKENDS, fresh_database
from tests.support.peer import Peer
from tests.support.server import ServerProcess, running_server
from tests.support.ws import open_socket, recv_json, until_closed

LIMITS = EnvelopeLimits()
TIMEOUT = 2  # PostgreSQL statement and connect timeout for the outage test, in seconds


def _message_id(envelope_b64: str) -> bytes:
    return parse_envelope(base64.b64decode(envelope_b64), LIMITS).message_id


def _devices(server: ServerProcess, username: str, count: int) -> list[Peer]:
    """`count` devices of one account, each with its own session, on one signed device list."""
    peers = [Peer(server, username).login() for _ in range(count)]
    first = peers[0]
    extra = [(p.device_id, p.device) for p in peers[1:]]
    assert first.register(extra=extra).status_code == 200
    for peer in peers[1:]:
        peer.identity, peer.account_id = first.identity, first.account_id
    return peers


@dataclass
class Traffic:
    """What each sending device sent and which of its sends the server acknowledged."""

    sent: dict[bytes, bytes] = field(default_factory=dict)  # message id -> envelope
    accepted: set[bytes] = field(default_factory=set)
    seen: dict[uuid.UUID, list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # device -> (seq, message id) as delivered, in arrival order

    def record(self, device: Peer, frame: dict[str, Any]) -> None:
        if frame["type"] == "accepted":
            self.accepted.add(bytes.fromhex(frame["message"]))
        elif frame["type"] == "deliver":
            self.seen[device.device_id].append((frame["seq"], _message_id(frame["envelope"])))
        elif frame["type"] == "error":
            raise AssertionError(frame)


async def _keep_sending(
    peer: Peer,
    conversation: uuid.UUID,
    recipients: dict[uuid.UUID, bytes],
    traffic: Traffic,
    window: int = 8,
) -> None:
    """Send windows of envelopes until the server goes away; never raises for that."""
    assert peer.ws is not None
    with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
        while True:
            batch = [
                peer.seal(conversation, recipients, os.urandom(24).hex()) for _ in range(window)
            ]
            waiting = set()
            for envelope in batch:
                message_id = parse_envelope(envelope, LIMITS).message_id
                traffic.sent[message_id] = envelope
                waiting.add(message_id)
                await peer.send_raw(envelope)
            while waiting - traffic.accepted:
                traffic.record(peer, await recv_json(peer.ws, timeout=10))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_under_load_loses_no_acknowledged_message_and_never_stores_one_twice(
    tmp_path: Path, backend: str
) -> None:
    with serving(tmp_path, backend, send_rate_per_second=100_000, send_burst=100_000) as server:
        (conversation,) = provision_now(
            server, {"tess": "therapist", "carl": "client"}, [("tess", "carl")]
        )
        devices = _devices(server, "tess", 3) + _devices(server, "carl", 2)
        keys = {d.device_id: d.device.encryption_key for d in devices}
        traffic = Traffic()

        async def load_then_kill() -> int:
            for device in devices:
                await device.connect()
            senders = [
                asyncio.create_task(
                    _keep_sending(
                        d,
                        conversation,
                        {k: v for k, v in keys.items() if k != d.device_id},
                        traffic,
                    )
                )
                for d in devices[:4]  # three of tess's devices and one of carl's send
            ]
            senders += [asyncio.create_task(_keep_reading(d, traffic)) for d in devices[4:]]
            await asyncio.sleep(1.5)
            accepted_before_kill = len(traffic.accepted)
            server.kill()  # SIGKILL: no shutdown hook runs, whatever was mid-commit
            await asyncio.gather(*senders)
            for device in devices:
                with contextlib.suppress(Exception):
                    await device.close()
            return accepted_before_kill

        accepted_before_kill = asyncio.run(load_then_kill())
        acknowledged = set(traffic.accepted)
        unacknowledged = set(traffic.sent) - acknowledged
        assert accepted_before_kill > 100, accepted_before_kill
        server.start()
        for device in devices:
            device.server = server

        async def retry_and_drain() -> None:
            for device in devices:
                await device.connect()
            # A client retries what was never acknowledged, with the identical envelope.
            for message_id in unacknowledged:
                sender = next(d for d in devices[:4] if _sent_by(traffic, d, message_id))
                await sender.send_raw(traffic.sent[message_id])
            await asyncio.wait_for(asyncio.gather(*(_drain(d, traffic) for d in devices)), 60)
            for device in devices:
                await device.close()

        asyncio.run(retry_and_drain())
        assert traffic.accepted >= set(traffic.sent)  # every retry was accepted too
        for device in devices:
            by_seq: dict[int, bytes] = {}
            for seq, message_id in traffic.seen[device.device_id]:
                assert by_seq.setdefault(seq, message_id) == message_id  # a re-sent seq is equal
            seqs_of: dict[bytes, list[int]] = defaultdict(list)
            for seq, message_id in by_seq.items():
                seqs_of[message_id].append(seq)
            twice = {m.hex(): s for m, s in seqs_of.items() if len(s) > 1}
            assert twice == {}, f"messages stored twice for device {device.device_id}: {twice}"
            assert sorted(by_seq) == list(range(1, len(by_seq) + 1))  # no gaps
            own = {m for m, e in traffic.sent.items() if _from_device(e, device)}
            assert set(seqs_of) == set(traffic.sent) - own
        print(
            f"\n{backend}: {accepted_before_kill} acknowledged before SIGKILL, "
            f"{len(unacknowledged)} in flight and retried, all delivered exactly once"
        )
        assert tracebacks(server.log()) == []


async def _keep_reading(peer: Peer, traffic: Traffic) -> None:
    """Take deliveries until the server goes away (a reader that stopped would be cut off)."""
    assert peer.ws is not None
    with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
        while True:
            traffic.record(peer, await recv_json(peer.ws, timeout=10))


async def _drain(device: Peer, traffic: Traffic) -> None:
    """Read until every message not sent by `device` was delivered to it, and every retry it
    sent was accepted."""
    assert device.ws is not None
    own = {m for m, e in traffic.sent.items() if _from_device(e, device)}
    expected = set(traffic.sent) - own
    delivered = {m for _, m in traffic.seen[device.device_id]}
    while not (delivered >= expected and traffic.accepted >= own):
        frame = await recv_json(device.ws, timeout=30)
        traffic.record(device, frame)
        if frame["type"] == "deliver":
            delivered.add(_message_id(frame["envelope"]))


def _from_device(envelope: bytes, device: Peer) -> bool:
    return parse_envelope(envelope, LIMITS).sender_device == device.device_id.bytes


def _sent_by(traffic: Traffic, device: Peer, message_id: bytes) -> bool:
    return _from_device(traffic.sent[message_id], device)


# -- PostgreSQL unreachable ------------------------------------------------------------------


@dataclass
class Outage:
    server: ServerProcess
    tess: Peer
    carl: Peer
    conversation: uuid.UUID

    def envelope(self, text: str) -> bytes:
        return self.tess.seal(
            self.conversation, {self.carl.device_id: self.carl.device.encryption_key}, text
        )

    async def send(self, envelope: bytes, timeout: float = 20) -> dict[str, Any]:
        await self.tess.send_raw(envelope)
        return await self.tess.next_of("accepted", "error", timeout=timeout)

    async def stored_message_ids(self) -> set[bytes]:
        from tests.support.db import snapshot

        tables = await snapshot(self.server.database_url, exclude=())
        return {row[2] for row in tables["envelopes"]}


def _outage_pair(server: ServerProcess) -> Outage:
    (conversation,) = provision_now(
        server, {"tess": "therapist", "carl": "client"}, [("tess", "carl")]
    )
    tess, carl = Peer(server, "tess").login(), Peer(server, "carl").login()
    for peer in (tess, carl):
        assert peer.register().status_code == 200
    return Outage(server, tess, carl, conversation)


async def _until_accepted(outage: Outage, envelope: bytes, seconds: float) -> float:
    """Resend `envelope` until it is accepted; return how long that took."""
    started = time.monotonic()
    while True:
        reply = await outage.send(envelope)
        if reply["type"] == "accepted":
            return time.monotonic() - started
        assert reply["code"] == "unavailable", reply
        assert time.monotonic() - started < seconds, "service did not come back"
        await asyncio.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_cut_off_gives_unavailable_stores_nothing_and_recovers(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as direct_url:
        url = make_url(direct_url)
        proxy = DatabaseProxy(url.host or "127.0.0.1", url.port or 5432)
        with proxy.running():
            # A short statement timeout (the default is 30 s) keeps the stall phase short.
            proxied = url.set(
                host="127.0.0.1", port=proxy.port, query={"command_timeout": str(TIMEOUT)}
            ).render_as_string(hide_password=False)
            with running_server(tmp_path / "data", proxied) as server:
                outage = _outage_pair(server)
                _exercise_outage(outage, proxy, server)


def _exercise_outage(outage: Outage, proxy: DatabaseProxy, server: ServerProcess) -> None:
    async def run() -> None:
        await outage.tess.connect()
        await outage.carl.connect()
        before = outage.envelope("before the outage")
        assert (await outage.send(before))["type"] == "accepted"

        proxy.cut()
        refused = [outage.envelope(f"during the cut {i}") for i in range(5)]
        started = time.monotonic()
        for envelope in refused:
            reply = await outage.send(envelope)
            assert reply == {
                "type": "error",
                "code": "unavailable",
                "message": "storage unavailable; the message was not stored",
            }
        cut_seconds = (time.monotonic() - started) / len(refused)
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["database"] == "unreachable"
            login = await client.post(
                "/v1/login", json={"username": "carl", "password": outage.carl.password}
            )
            assert login.status_code == 503 and login.json()["error"]["code"] == "unavailable"
            assert login.headers.get("Retry-After") is None or int(login.headers["Retry-After"])
            me = await client.get("/v1/me", headers=outage.carl.auth)
            assert me.status_code == 503
        fresh = await open_socket(server.ws_url, token=outage.carl.token)
        code, frames = await until_closed(fresh, timeout=30)
        assert code == 1013 and frames[-1]["code"] == "unavailable"

        proxy.restore()
        await _until_accepted(outage, outage.envelope("between the outages"), 30)
        proxy.stall()  # bytes held, nothing refused: only a timeout can tell
        stalled = outage.envelope("during the stall")
        started = time.monotonic()
        reply = await outage.send(stalled, timeout=30)
        stall_seconds = time.monotonic() - started
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert stall_seconds < 2 * TIMEOUT + 3  # the statement, then its rollback, time out
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
            assert (await client.get("/healthz")).status_code == 503
        refused.append(stalled)

        proxy.restore()
        recovery = await _until_accepted(outage, outage.envelope("after the outage"), 30)
        for envelope in refused:  # the client retries what was refused: now accepted
            assert (await outage.send(envelope))["type"] == "accepted"
        stored = await outage.stored_message_ids()
        ids = {parse_envelope(e, LIMITS).message_id for e in [before, *refused]}
        assert ids <= stored and len(stored) == len(ids) + 2  # and the two probes
        delivered = set()
        while len(delivered) < len(stored):
            delivered.add(_message_id((await outage.carl.next_of("deliver"))["envelope"]))
        assert delivered == stored  # the same sockets carry on; nothing twice, nothing lost
        await outage.tess.close()
        await outage.carl.close()
        print(
            f"\nPostgreSQL cut: 'unavailable' after {cut_seconds * 1000:.0f} ms per send; "
            f"stalled: after {stall_seconds:.1f} s (command_timeout {TIMEOUT} s); "
            f"service back {recovery:.1f} s after the proxy forwarded again"
        )

    asyncio.run(run())
    assert tracebacks(server.log()) == []


# -- SQLite writes failing -------------------------------------------------------------------


def _sqlite_files(server: ServerProcess) -> list[Path]:
    database = Path(make_url(server.database_url).database or "")
    return [p for p in (database, Path(f"{database}-wal")) if p.exists()]


@contextlib.contextmanager
def _file_size_limit(pid: int, limit: int) -> Iterator[None]:
    """No file the process writes may grow past `limit` bytes, until the block ends."""
    _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def _refused_then_recovered(outage: Outage, block: contextlib.AbstractContextManager[Any]) -> None:
    """Fill until writes fail inside `block`, check the refusals, then recover after it."""

    async def run() -> None:
        await outage.tess.connect()
        await outage.carl.connect()
        payload = os.urandom(20_000).hex()  # ~40 KB envelopes fill the disk (or the WAL) fast
        accepted: list[bytes] = []
        refused: list[bytes] = []
        with block:
            for _ in range(200):
                envelope = outage.tess.seal(
                    outage.conversation,
                    {outage.carl.device_id: outage.carl.device.encryption_key},
                    payload,
                )
                reply = await outage.send(envelope)
                if reply["type"] == "accepted":
                    assert not refused, "accepted after a refusal while still full"
                    accepted.append(envelope)
                    continue
                assert reply["code"] == "unavailable", reply
                refused.append(envelope)
                if len(refused) == 3:
                    break
            assert len(refused) == 3, "the writes never failed"
            async with httpx.AsyncClient(base_url=outage.server.http_url, timeout=30) as client:
                login = await client.post(
                    "/v1/login", json={"username": "carl", "password": outage.carl.password}
                )
                assert login.status_code == 503, login.text  # a session can't be stored either
        await _until_accepted(outage, refused[0], 20)
        for envelope in refused[1:]:
            assert (await outage.send(envelope))["type"] == "accepted"
        stored = await outage.stored_message_ids()
        assert stored == {parse_envelope(e, LIMITS).message_id for e in accepted + refused}
        delivered = set()
        while len(delivered) < len(stored):
            delivered.add(_message_id((await outage.carl.next_of("deliver"))["envelope"]))
        assert delivered == stored
        await outage.tess.close()
        await outage.carl.close()
        print(f"\n{len(accepted)} accepted before the writes failed; all 3 refused were retried")

    asyncio.run(run())


@pytest.mark.slow
def test_sqlite_write_errors_give_unavailable_store_nothing_and_recover(tmp_path: Path) -> None:
    with serving(tmp_path, send_rate_per_second=100_000, send_burst=100_000) as server:
        outage = _outage_pair(server)
        pid = server_pid(server)
        limit = max(p.stat().st_size for p in _sqlite_files(server))
        assert server.log_path.stat().st_size < limit  # the log file is not what fails
        _refused_then_recovered(outage, _file_size_limit(pid, limit))
        server.stop()
        check = sqlite3.connect(_sqlite_files(server)[0])
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        check.close()
        assert tracebacks(server.log()) == []


@contextlib.contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[None]:
    directory.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small filesystem needs mount (root): {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@contextlib.contextmanager
def _full_until_grown(directory: Path) -> Iterator[None]:
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,size=64m", str(directory)], check=True)


@pytest.mark.slow
def test_sqlite_on_a_full_disk_gives_unavailable_stores_nothing_and_recovers(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("a small filesystem needs mount, which needs root")
    disk = tmp_path / "disk"
    with _tmpfs(disk, "2m"):
        (tmp_path / "data").mkdir()
        url = f"sqlite+aiosqlite:///{disk / 'securemsg.db'}"
        with running_server(
            tmp_path / "data", url, send_rate_per_second=100_000, send_burst=100_000
        ) as server:
            outage = _outage_pair(server)
            _refused_then_recovered(outage, _full_until_grown(disk))
            assert tracebacks(server.log()) == []
        check = sqlite3.connect(disk / "securemsg.db")
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        check.close()
