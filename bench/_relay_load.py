"""The lean parts of bench/relay.py: the sealing worker, the load generator and the bare relay.

The load generator is one asyncio loop in one process. Send frames are pre-built bytes; an
incoming frame is parsed only as far as the envelope's message id (base64 characters 24..48 of
the envelope cover bytes 18..36, the message id and two more bytes, so no decoding is needed) and,
every ACK_EVERY deliveries, its `"seq":`. Sender and receiver of a pair live in this process, so a
shared dict maps that message-id key to the send time.

The bare relay (`python -m bench._relay_load --bare-port PORT`) is a tiny
`websockets.asyncio.server`: no auth, no storage; whatever arrives on `/s/<i>` is forwarded to the
socket connected on `/r/<i>`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

SEND_PREFIX = b'{"type":"send","envelope":"'
ENVELOPE_MARK = b'"envelope":"'
KEY_START = len(ENVELOPE_MARK) + 24  # base64 chars 24..48 <- envelope bytes 18..36
KEY_END = len(ENVELOPE_MARK) + 48
SEQ_MARK = b'"seq":'
ACK_EVERY = 64


def frame_key(frame: bytes) -> bytes:
    """The message-id key of a pre-built send frame (the same slice a receiver takes)."""
    start = frame.find(ENVELOPE_MARK)
    return frame[start + KEY_START : start + KEY_END]


# -- sealing (runs in worker processes, before any timing) -------------------------------------


@dataclasses.dataclass(frozen=True)
class SealSpec:
    sender_seed: bytes
    sender_account: bytes
    sender_device: bytes
    conversation: bytes
    recipient_device: bytes
    recipient_key: bytes


_KEYS: dict[bytes, Any] = {}


def seal_chunk(spec: SealSpec, count: int, payload_bytes: int) -> list[bytes]:
    """`count` freshly sealed envelopes (unique message ids) as ready-to-send JSON frames."""
    from securemsg.crypto.envelope import seal_envelope
    from securemsg.crypto.keys import DeviceKeys

    keys = _KEYS.get(spec.sender_seed)
    if keys is None:
        keys = _KEYS[spec.sender_seed] = DeviceKeys.from_seed(spec.sender_seed)
    now_ms = int(time.time() * 1000)
    frames = []
    for _ in range(count):
        envelope = seal_envelope(
            sender=keys,
            sender_account=spec.sender_account,
            sender_device=spec.sender_device,
            conversation_id=spec.conversation,
            message_id=os.urandom(16),
            timestamp_ms=now_ms,
            recipients={spec.recipient_device: spec.recipient_key},
            plaintext=os.urandom(payload_bytes),
        )
        frames.append(SEND_PREFIX + base64.b64encode(envelope) + b'"}')
    return frames


# -- the load generator ----------------------------------------------------------------------


class Pair:
    """One sender socket and one receiver socket, and the pre-built frames the sender sends."""

    __slots__ = ("frames", "inflight", "keys", "pos", "receiver", "room", "sender", "waiting")

    def __init__(self, sender: ClientConnection, receiver: ClientConnection) -> None:
        self.sender = sender
        self.receiver = receiver
        self.frames: Sequence[bytes] = ()
        self.keys: Sequence[bytes] = ()
        self.pos = 0
        self.inflight = 0
        self.room = asyncio.Event()
        self.waiting = False

    def load(self, frames: Sequence[bytes]) -> None:
        self.frames = frames
        self.keys = [frame_key(f) for f in frames]
        self.pos = 0


@dataclasses.dataclass
class PhaseResult:
    name: str
    delivered: int
    seconds: float
    latencies_ms: list[float]
    offered_per_s: float
    server_cpu_s: float
    load_cpu_s: float
    other_cpu_s: float  # host CPU used by neither the server nor the load process: noise
    undelivered: int  # still in flight when deliveries stopped coming during the drain
    errors: int
    error_samples: list[str]
    exhausted: bool
    drain_seconds: float

    @property
    def per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its child processes (the server's
    signature workers: live ones, and those it has reaped), from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(entry) == pid:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU seconds all cores of the host spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Load:
    """The pairs against one server, their reader tasks, and the current phase's counters."""

    def __init__(self, pairs: list[Pair], *, durable: bool, server_pid: int) -> None:
        self.pairs = pairs
        self.durable = durable
        self.server_pid = server_pid
        self.sent: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.record_from = math.inf
        self.record_until = math.inf
        self.delivered = 0
        self.accepted = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.window = 1 << 30
        self.sends = 0
        self.running = False
        self.cycle = not durable  # the bare relay doesn't de-duplicate: frames may be reused
        self.exhausted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start_readers(self) -> None:
        for pair in self.pairs:
            self._tasks.append(asyncio.create_task(self._receive(pair)))
            if self.durable:
                self._tasks.append(asyncio.create_task(self._replies(pair)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pair in self.pairs:
            for ws in (pair.sender, pair.receiver):
                ws.transport.abort()

    async def _receive(self, pair: Pair) -> None:
        ws = pair.receiver
        sent = self.sent
        latencies = self.latencies
        unacked = 0
        count = 0
        try:
            while True:
                frame = await ws.recv(decode=False)
                start = frame.find(ENVELOPE_MARK)
                if start < 0:
                    continue  # caught_up and the like
                now = time.perf_counter()
                sent_at = sent.pop(frame[start + KEY_START : start + KEY_END], None)
                if sent_at is not None and self.record_from <= sent_at < self.record_until:
                    latencies.append(now - sent_at)
                self.delivered += 1
                pair.inflight -= 1
                if pair.waiting:
                    pair.room.set()
                count += 1
                unacked += 1
                if unacked >= ACK_EVERY:
                    unacked = 0
                    seq = count
                    if self.durable:
                        at = frame.find(SEQ_MARK) + len(SEQ_MARK)
                        seq = int(frame[at : frame.find(b",", at)])
                    await ws.send(b'{"type":"ack","seq":%d}' % seq, text=True)
        except ConnectionClosed:
            return

    async def _replies(self, pair: Pair) -> None:
        """Durable only: the sender's `accepted` (or `error`) replies."""
        ws = pair.sender
        try:
            while True:
                frame = await ws.recv(decode=False)
                if frame.startswith(b'{"type":"accepted"'):
                    self.accepted += 1
                elif frame.startswith(b'{"type":"error"'):
                    self.errors += 1
                    if len(self.error_samples) < 5:
                        self.error_samples.append(frame[:200].decode(errors="replace"))
        except ConnectionClosed:
            return

    # -- senders ------------------------------------------------------------------------

    def _next(self, pair: Pair) -> tuple[bytes, bytes] | None:
        pos = pair.pos
        if pos >= len(pair.frames):
            if not self.cycle:
                self.exhausted.set()
                return None
            pos = 0
        pair.pos = pos + 1
        self.sends += 1
        return pair.frames[pos], pair.keys[pos]

    async def _paced(self, rate: float) -> None:
        """Open loop: message n is due at start + n/rate, round-robin over the pairs."""
        pairs = self.pairs
        sent = self.sent
        start = time.perf_counter()
        n = 0
        while self.running:
            due = int((time.perf_counter() - start) * rate) + 1
            while n < due and self.running:
                pair = pairs[n % len(pairs)]
                item = self._next(pair)
                if item is None:
                    return
                sent[item[1]] = time.perf_counter()
                pair.inflight += 1
                await pair.sender.send(item[0], text=True)
                n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))

    async def _windowed(self, pair: Pair) -> None:
        """Closed loop: keep `window` messages of this pair sent but not yet delivered."""
        sent = self.sent
        ws = pair.sender
        while self.running:
            if pair.inflight >= self.window:
                pair.room.clear()
                pair.waiting = True
                await pair.room.wait()
                pair.waiting = False
                continue
            item = self._next(pair)
            if item is None:
                return
            sent[item[1]] = time.perf_counter()
            pair.inflight += 1
            await ws.send(item[0], text=True)

    # -- one measured phase -------------------------------------------------------------

    async def phase(
        self,
        name: str,
        *,
        rate: float | None,
        window: int,
        warmup: float,
        seconds: float,
        stall_timeout: float = 10.0,
    ) -> PhaseResult:
        """Run senders for warmup + seconds; measure over the last `seconds`; then drain."""
        self.sent.clear()
        self.latencies.clear()
        self.exhausted = asyncio.Event()
        self.window = window
        self.errors = 0
        self.error_samples.clear()
        for pair in self.pairs:
            pair.inflight = 0
        begin = time.perf_counter()
        self.record_from = begin + warmup
        self.record_until = self.record_from + seconds
        self.running = True
        if rate is not None:
            senders = [asyncio.create_task(self._paced(rate))]
        else:
            senders = [asyncio.create_task(self._windowed(p)) for p in self.pairs]
        await asyncio.sleep(max(0.0, self.record_from - time.perf_counter()))
        if self.exhausted.is_set():
            raise RuntimeError(f"{name}: the sealed envelopes ran out during the warm-up")
        t0 = time.perf_counter()
        delivered0 = self.delivered
        sent0 = self.sends
        server0 = process_cpu_seconds(self.server_pid)
        load0 = time.process_time()
        host0 = host_busy_seconds()
        exhausted = False
        try:
            await asyncio.wait_for(
                self.exhausted.wait(), timeout=max(0.0, self.record_until - time.perf_counter())
            )
            exhausted = True
        except TimeoutError:
            pass
        t1 = time.perf_counter()
        delivered1 = self.delivered
        sent1 = self.sends
        server1 = process_cpu_seconds(self.server_pid)
        load1 = time.process_time()
        host1 = host_busy_seconds()
        self.record_until = min(self.record_until, t1)
        self.running = False
        for pair in self.pairs:
            pair.room.set()
        await asyncio.gather(*senders, return_exceptions=True)
        # Drain: wait for what is still in flight while deliveries keep coming.
        drained_at, seen = time.perf_counter(), self.delivered
        while self.sent and time.perf_counter() - drained_at < stall_timeout:
            await asyncio.sleep(0.02)
            if self.delivered != seen:
                drained_at, seen = time.perf_counter(), self.delivered
        drain_seconds = time.perf_counter() - t1
        return PhaseResult(
            name=name,
            delivered=delivered1 - delivered0,
            seconds=t1 - t0,
            latencies_ms=[x * 1000 for x in self.latencies],
            offered_per_s=(sent1 - sent0) / (t1 - t0),
            server_cpu_s=server1 - server0,
            load_cpu_s=load1 - load0,
            other_cpu_s=max(0.0, (host1 - host0) - (server1 - server0) - (load1 - load0)),
            undelivered=len(self.sent),
            errors=self.errors,
            error_samples=list(self.error_samples),
            exhausted=exhausted,
            drain_seconds=drain_seconds,
        )


# -- the bare relay ---------------------------------------------------------------------------


async def bare_relay(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    receivers: dict[str, ServerConnection] = {}
    arrived: dict[str, asyncio.Event] = {}

    async def handler(ws: ServerConnection) -> None:
        _, role, index = ws.request.path.split("/") if ws.request else ("", "", "")
        ready = arrived.setdefault(index, asyncio.Event())
        if role == "r":
            receivers[index] = ws
            ready.set()
            async for _ in ws:  # acks: ignored
                pass
            return
        await asyncio.wait_for(ready.wait(), timeout=30)
        target = receivers[index]
        async for message in ws:
            await target.send(message)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 20) as server:
        print("bare relay ready", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(bare_relay(args.bare_port))


if __name__ == "__main__":
    main()
