"""Relay benchmark: N senders -> N receivers through a real `securemsg serve`, against a bare relay.

Run from the repository root with the virtualenv active:

    python -m bench.relay --quick        # < 1 minute (20 pairs, 3 s phases, 1,000 idle sockets)
    python -m bench.relay                # full, ~4-5 minutes (50 pairs, 15 s, 10,000 idle sockets)
    python bench/relay.py [options]      # the same; --help lists the options, --keep keeps the
                                         # data directory and the servers' logs

What it does (numbers only; nothing is asserted):

1. A fresh temporary data directory (SQLite, WAL, synchronous=FULL). Accounts and conversations
   are created with the CLI (`securemsg account create` / `conversation create`). Conversation c
   pairs therapist t<c> with client c<c>; pair i (sender = a therapist device, receiver = a device
   of that conversation's client) uses conversation i % C, so with more pairs than conversations an
   account has several devices, each on its own socket.
2. `securemsg serve` runs in its own process with the per-socket send limiter raised out of the
   way (`SECUREMSG_SEND_RATE_PER_SECOND`/`SEND_BURST`), cheap Argon2 (t=1, 1 MiB) and raised
   per-account device/socket caps for a fast setup, and log level warning; the bare relay
   (`bench/_relay_load.py`: websockets.asyncio.server, no auth, no storage, frame from /s/i goes to
   /r/i) runs in another. The load generator is this process: one asyncio loop.
3. Envelopes (one wrap, to the pair's receiver; ~1 KiB plaintext) are sealed before any timing, in
   two worker processes, into pre-built JSON `send` frames. The bare relay is sent the same frames.
4. Per server: a paced phase (open loop, `--rate` msg/s round-robin over the senders) and a
   saturation phase (each sender keeps `--window` messages sent-but-not-delivered). Latency is
   send -> deliver as seen by the load process (send time kept in a dict keyed by the envelope's
   message id). Receivers acknowledge cumulatively every 64 deliveries. Each phase warms up
   (a fifth of its length, 0.5-2 s), is measured, then drains what is still in flight.
5. Idle sockets: a fresh server process on the same data directory; K authenticated and attached
   sockets are opened and left idle; server RSS growth (VmRSS) per socket is reported.

The machine is small (2 cores shared by the server and the load generator), so the bare relay's
throughput is bounded by the load generator as much as by the relay; both are measured with the
same generator, in the same run. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench._relay_load import (  # noqa: E402
    SEND_PREFIX,
    Load,
    Pair,
    PhaseResult,
    SealSpec,
    process_cpu_seconds,
    seal_chunk,
)
from securemsg.crypto.devices import certify_device, sign_device_list  # noqa: E402
from securemsg.crypto.keys import DeviceKeys, IdentityKey  # noqa: E402
from securemsg.protocol.devices import DeviceEntry, DeviceListLimits  # noqa: E402
from securemsg.protocol.frames import ATTACH_PURPOSE  # noqa: E402

PASSWORD = "bench password 0123456789"
DEVICES_PER_ACCOUNT = 1024  # idle-socket accounts; the server's per-account caps are raised to fit
# Upper bound (msg/s) on what the saturation phase is sealed for; the phase ends early, and says
# so, if its envelopes run out (the server refuses a reused message id, so none can be reused).
SATURATION_CAP = 15_000
CONNECT_CONCURRENCY = 16  # < max_unauthenticated_sockets_per_address (32)
WARM_SOCKETS = 16  # opened before the idle baseline, so one-time costs are not counted per socket
SERVER_SETTINGS = {
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_KIB": "1024",
    "SEND_RATE_PER_SECOND": "1000000",
    "SEND_BURST": "1000000",
    "MAX_DEVICES_PER_ACCOUNT": "1024",
    "MAX_SOCKETS_PER_ACCOUNT": "1024",
    "MAX_REQUEST_BYTES": str(8 << 20),
    "LOGIN_ATTEMPTS_PER_ADDRESS": "100000",
    "LOG_LEVEL": "warning",
}


def say(text: str = "") -> None:
    print(text, flush=True)


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vmrss_kib(pid: int | str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- processes ---------------------------------------------------------------------------------


class Process:
    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=raise_nofile,  # only setrlimit in the child
            )
        self.pid = self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log_path.name} exited:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_until(ready: Any, process: Process, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(OSError, httpx.HTTPError):
            if ready():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def start_durable(
    data_dir: Path,
    env: dict[str, str],
    launcher: tuple[str, ...] = (sys.executable, "-m", "securemsg"),
) -> tuple[Process, int]:
    port = free_port()
    argv = [*launcher, "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--keys-dir", str(data_dir / "keys")]
    server = Process(argv, env, data_dir / "server.log")
    url = f"http://127.0.0.1:{port}/healthz"
    wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, server, "securemsg serve")
    return server, port


def start_bare(data_dir: Path, env: dict[str, str]) -> tuple[Process, int]:
    port = free_port()
    argv = [sys.executable, "-m", "bench._relay_load", "--bare-port", str(port)]
    relay = Process(argv, env, data_dir / "bare.log")

    def ready() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    wait_until(ready, relay, "bare relay")
    return relay, port


def cli(env: dict[str, str], data_dir: Path, *args: str, stdin: str | None = None) -> str:
    argv = [sys.executable, "-m", "securemsg", *args, "--data-dir", str(data_dir)]
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"securemsg {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


# -- accounts and devices -------------------------------------------------------------------


@dataclasses.dataclass
class Device:
    seed: bytes
    keys: DeviceKeys
    id: uuid.UUID
    token: str = ""
    account: uuid.UUID | None = None

    @classmethod
    def new(cls) -> Device:
        seed = os.urandom(32)
        return cls(seed, DeviceKeys.from_seed(seed), uuid.uuid4())


@dataclasses.dataclass
class Account:
    username: str
    role: str
    devices: list[Device] = dataclasses.field(default_factory=list)
    conversation: uuid.UUID | None = None


def login_and_register(http: httpx.Client, account: Account) -> None:
    r = http.post("/v1/login", json={"username": account.username, "password": PASSWORD})
    r.raise_for_status()
    token, account_id = r.json()["token"], uuid.UUID(r.json()["account"])
    identity = IdentityKey.generate()
    now = int(time.time() * 1000)
    entries = [
        DeviceEntry(d.id.bytes, d.keys.signing_key, d.keys.encryption_key) for d in account.devices
    ]
    device_list = sign_device_list(
        identity,
        account_id=account_id.bytes,
        list_version=1,
        devices=entries,
        created_ms=now,
        limits=DeviceListLimits(max_devices=max(16, len(entries))),
    )
    certificates = [
        certify_device(
            identity,
            account_id=account_id.bytes,
            device_id=d.id.bytes,
            device=d.keys.public_keys,
            created_ms=now,
        )
        for d in account.devices
    ]
    r = http.put(
        "/v1/devices",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "identity_key": base64.b64encode(identity.public_key).decode(),
            "device_list": base64.b64encode(device_list).decode(),
            "certificates": [base64.b64encode(c).decode() for c in certificates],
        },
    )
    if r.status_code != 200:
        raise RuntimeError(f"registering {account.username}'s devices: {r.text}")
    for device in account.devices:
        device.token, device.account = token, account_id


# -- sockets ---------------------------------------------------------------------------------


async def attached_socket(url: str, device: Device) -> ClientConnection:
    """An authenticated (Authorization header) and attached socket, past its `caught_up`."""
    ws = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {device.token}"},
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=60,
        close_timeout=1,
    )
    ready = json.loads(await ws.recv())
    if ready.get("type") != "ready":
        raise RuntimeError(f"expected ready, got {ready}")
    signature = device.keys.sign(
        ATTACH_PURPOSE, base64.b64decode(ready["challenge"]) + device.id.bytes
    )
    attach = {
        "type": "attach",
        "device": str(device.id),
        "signature": base64.b64encode(signature).decode(),
    }
    await ws.send(json.dumps(attach))
    for expected in ("attached", "caught_up"):
        frame = json.loads(await ws.recv())
        if frame.get("type") != expected:
            raise RuntimeError(f"expected {expected}, got {frame}")
    return ws


async def bare_socket(url: str) -> ClientConnection:
    return await connect(url, compression=None, ping_interval=None, max_size=None)


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


# -- the measured runs -----------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    pairs: int
    window: int
    seconds: float
    warmup: float
    rate: float
    payload_bytes: int


class Sealer:
    """Seals pools of envelopes (per pair) in worker processes, off the event loop."""

    def __init__(self, specs: list[SealSpec], payload_bytes: int) -> None:
        # Spawned, not forked: this process has threads by the time the workers start.
        context = multiprocessing.get_context("spawn")
        self.executor = concurrent.futures.ProcessPoolExecutor(2, mp_context=context)
        self.specs = specs
        self.payload_bytes = payload_bytes
        self.sealed = 0
        self.seconds = 0.0
        self.frame_bytes = self.envelope_bytes = 0

    def _seal(self, per_pair: int) -> list[list[bytes]]:
        start = time.monotonic()
        chunk = 400
        futures = [
            [
                self.executor.submit(
                    seal_chunk, spec, min(chunk, per_pair - at), self.payload_bytes
                )
                for at in range(0, per_pair, chunk)
            ]
            for spec in self.specs
        ]
        pools = [[frame for f in fs for frame in f.result()] for fs in futures]
        self.frame_bytes = len(pools[0][0])
        self.envelope_bytes = len(base64.b64decode(pools[0][0][len(SEND_PREFIX) : -2]))
        self.sealed += per_pair * len(self.specs)
        self.seconds += time.monotonic() - start
        return pools

    async def seal(self, per_pair: int) -> list[list[bytes]]:
        # In a thread: the loop keeps answering the server's pings meanwhile.
        return await asyncio.to_thread(self._seal, per_pair)

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)


async def throughput(
    plan: Plan,
    senders: list[Device],
    receivers: list[Device],
    sealer: Sealer,
    durable: tuple[Process, int],
    bare: tuple[Process, int],
) -> dict[str, PhaseResult]:
    results: dict[str, PhaseResult] = {}
    span = plan.warmup + plan.seconds

    def run(load: Load, name: str, rate: float | None) -> Any:
        say(f"  {name} ...")
        return load.phase(
            name, rate=rate, window=plan.window, warmup=plan.warmup, seconds=plan.seconds
        )

    url = f"ws://127.0.0.1:{durable[1]}/v1/ws"
    sockets = await gather_limited(
        [attached_socket(url, d) for d in [*receivers, *senders]], CONNECT_CONCURRENCY
    )
    for s in sockets:
        if isinstance(s, BaseException):
            raise s
    pairs = [Pair(s, r) for s, r in zip(sockets[plan.pairs :], sockets[: plan.pairs], strict=True)]
    load = Load(pairs, durable=True, server_pid=durable[0].pid)
    load.start_readers()

    # Paced: enough unique envelopes for the whole phase (also reused, cycled, for the bare relay).
    per_pair = max(math.ceil(plan.rate * span * 1.1 / plan.pairs) + 8, 2 * plan.window + 8)
    paced = await sealer.seal(per_pair)
    for pair, frames in zip(pairs, paced, strict=True):
        pair.load(frames)
    results["durable_paced"] = await run(load, "durable_paced", plan.rate)

    # Saturation: the server dedups message ids, so every send needs a fresh envelope. Size the
    # pool from what the paced phase showed (a server that could not keep up with the paced rate
    # will not do 3x that at saturation); the phase ends early, and says so, if it runs out.
    paced_rate = results["durable_paced"].per_s
    expected = SATURATION_CAP if paced_rate >= 0.95 * plan.rate else max(3 * paced_rate, 2000)
    per_pair = math.ceil(min(SATURATION_CAP, expected) * span / plan.pairs) + plan.window
    saturation = await sealer.seal(per_pair)
    for pair, frames in zip(pairs, saturation, strict=True):
        pair.load(frames)
    results["durable_sat"] = await run(load, "durable_sat", None)
    await load.close()

    base = f"ws://127.0.0.1:{bare[1]}"
    receivers_ws = [await bare_socket(f"{base}/r/{i}") for i in range(plan.pairs)]
    senders_ws = [await bare_socket(f"{base}/s/{i}") for i in range(plan.pairs)]
    pairs = [Pair(s, r) for s, r in zip(senders_ws, receivers_ws, strict=True)]
    load = Load(pairs, durable=False, server_pid=bare[0].pid)
    load.start_readers()
    for pair, frames in zip(pairs, paced, strict=True):
        pair.load(frames)  # no de-duplication here: the same frames are sent round and round
    results["bare_paced"] = await run(load, "bare_paced", plan.rate)
    results["bare_sat"] = await run(load, "bare_sat", None)
    await load.close()
    return results


@dataclasses.dataclass
class IdleResult:
    sockets: int
    failed: int
    open_seconds: float
    server_cpu_s: float
    rss_before_kib: int
    rss_after_kib: int
    load_rss_growth_kib: int
    first_error: str

    @property
    def per_socket_kib(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / max(1, self.sockets)


async def idle_sockets(port: int, pid: int, devices: list[Device]) -> IdleResult:
    url = f"ws://127.0.0.1:{port}/v1/ws"
    warm = await gather_limited(
        [attached_socket(url, d) for d in devices[:WARM_SOCKETS]], CONNECT_CONCURRENCY
    )
    await asyncio.sleep(1.0)
    before, load_before = vmrss_kib(pid), vmrss_kib("self")
    cpu_before = process_cpu_seconds(pid)
    start = time.perf_counter()
    opened = await gather_limited(
        [attached_socket(url, d) for d in devices[WARM_SOCKETS:]], CONNECT_CONCURRENCY
    )
    open_seconds = time.perf_counter() - start
    cpu = process_cpu_seconds(pid) - cpu_before
    await asyncio.sleep(3.0)  # let every pump settle; the sockets are idle from here on
    after, load_after = vmrss_kib(pid), vmrss_kib("self")
    good = [s for s in opened if isinstance(s, ClientConnection)]
    bad = [s for s in opened if not isinstance(s, ClientConnection)]
    for ws in [*warm, *opened]:
        if isinstance(ws, ClientConnection):
            ws.transport.abort()
    return IdleResult(
        sockets=len(good),
        failed=len(bad),
        open_seconds=open_seconds,
        server_cpu_s=cpu,
        rss_before_kib=before,
        rss_after_kib=after,
        load_rss_growth_kib=load_after - load_before,
        first_error=repr(bad[0]) if bad else "",
    )


# -- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 minute)")
    parser.add_argument("--pairs", type=int, help="sender/receiver pairs (quick 20, full 50)")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase (3 / 15)")
    parser.add_argument("--window", type=int, default=64, help="in-flight sends per sender")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="plaintext per message")
    parser.add_argument("--rate", type=float, default=2000.0, help="paced phase msg/s")
    parser.add_argument("--conversations", type=int, help="conversations (quick 2, full 10)")
    parser.add_argument("--idle-sockets", type=int, help="idle sockets (quick 1,000, full 10,000)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    args.pairs = args.pairs or (20 if args.quick else 50)
    args.seconds = args.seconds or (3.0 if args.quick else 15.0)
    args.conversations = min(args.pairs, args.conversations or (2 if args.quick else 10))
    if args.idle_sockets is None:
        args.idle_sockets = 1000 if args.quick else 10_000
    return args


def create_accounts(
    env: dict[str, str],
    data_dir: Path,
    conversations: list[tuple[Account, Account]],
    idle: list[Account],
) -> None:
    """Accounts and conversations through the CLI, two at a time (one per core)."""
    cli(env, data_dir, "db", "upgrade")

    def account(a: Account) -> str:
        args = ("account", "create", "--role", a.role, a.username)
        return cli(env, data_dir, *args, stdin=PASSWORD + "\n")

    def conversation(pair: tuple[Account, Account]) -> str:
        return cli(env, data_dir, "conversation", "create", pair[0].username, pair[1].username)

    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        list(threads.map(account, [a for pair in conversations for a in pair] + idle))
        lines = list(threads.map(conversation, conversations))
    for (therapist, client), line in zip(conversations, lines, strict=True):
        therapist.conversation = client.conversation = uuid.UUID(line.rsplit(" ", 1)[1])


def main() -> None:
    args = parse_args()
    raise_nofile()
    plan = Plan(
        pairs=args.pairs,
        window=args.window,
        seconds=args.seconds,
        warmup=min(2.0, max(0.5, args.seconds / 5)),
        rate=args.rate,
        payload_bytes=args.payload_bytes,
    )
    data_dir = Path(tempfile.mkdtemp(prefix="securemsg-relay-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREMSG_")}
    env.update({"SECUREMSG_" + k: v for k, v in SERVER_SETTINGS.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    processes: list[Process] = []
    sealer: Sealer | None = None
    say(
        f"relay bench: pairs={plan.pairs} conversations={args.conversations} "
        f"window={plan.window} payload={plan.payload_bytes} B plaintext, paced rate "
        f"{plan.rate:g} msg/s, {plan.seconds:g} s per phase (+{plan.warmup:g} s warm-up), "
        f"idle sockets {args.idle_sockets:,}"
    )
    say("server: securemsg serve, SQLite WAL synchronous=FULL, fresh data dir; environment:")
    say("  " + " ".join(f"SECUREMSG_{k}={v}" for k, v in SERVER_SETTINGS.items()))
    say("  (the per-socket send limiter is raised so it does not cap the bench; cheap Argon2 and")
    say("  raised per-account device/socket caps only make the setup fast)")
    try:
        conversations = [
            (Account(f"t{c}", "therapist"), Account(f"c{c}", "client"))
            for c in range(args.conversations)
        ]
        idle_total = args.idle_sockets + WARM_SOCKETS
        idle_accounts = [
            Account(f"idle{a}", "client")
            for a in range(math.ceil(idle_total / DEVICES_PER_ACCOUNT))
        ]
        create_accounts(env, data_dir, conversations, idle_accounts)
        senders, receivers = [], []
        for i in range(plan.pairs):
            therapist, client = conversations[i % len(conversations)]
            senders.append(Device.new())
            receivers.append(Device.new())
            therapist.devices.append(senders[-1])
            client.devices.append(receivers[-1])
        for index, account in enumerate(idle_accounts):
            count = min(DEVICES_PER_ACCOUNT, idle_total - index * DEVICES_PER_ACCOUNT)
            account.devices = [Device.new() for _ in range(count)]
        accounts = [a for pair in conversations for a in pair] + idle_accounts
        say(
            f"  setup: {len(accounts)} accounts and {len(conversations)} conversations via the "
            f"CLI in {time.monotonic() - started:.1f} s"
        )

        durable, port = start_durable(data_dir, env)
        processes.append(durable)
        bare = start_bare(data_dir, env)
        processes.append(bare[0])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for account in accounts:
                login_and_register(http, account)
        specs = []
        for i in range(plan.pairs):
            conversation = conversations[i % len(conversations)][0].conversation
            assert conversation is not None and senders[i].account is not None
            specs.append(
                SealSpec(
                    sender_seed=senders[i].seed,
                    sender_account=senders[i].account.bytes,
                    sender_device=senders[i].id.bytes,
                    conversation=conversation.bytes,
                    recipient_device=receivers[i].id.bytes,
                    recipient_key=receivers[i].keys.encryption_key,
                )
            )
        sealer = Sealer(specs, plan.payload_bytes)
        results = asyncio.run(throughput(plan, senders, receivers, sealer, (durable, port), bare))
        for process in processes:
            process.stop()
        processes.clear()

        say(f"  idle sockets: {args.idle_sockets:,} on a fresh server process (same data)")
        idle_server, idle_port = start_durable(data_dir, env)
        processes.append(idle_server)
        devices = [d for a in idle_accounts for d in a.devices]
        idle = asyncio.run(idle_sockets(idle_port, idle_server.pid, devices))
    finally:
        if sealer is not None:
            sealer.close()
        for process in processes:
            process.stop()
        if args.keep:
            say(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    say(
        f"  sealed {sealer.sealed:,} envelopes in {sealer.seconds:.1f} s, before timing (one wrap "
        f"each; envelope {sealer.envelope_bytes} B, send frame {sealer.frame_bytes} B)"
    )
    report(args, plan, results, idle, time.monotonic() - started)


def report(
    args: argparse.Namespace,
    plan: Plan,
    results: dict[str, PhaseResult],
    idle: IdleResult,
    elapsed: float,
) -> None:
    say()
    head = ("phase", "offered/s", "deliv/s", "p50 ms", "p99 ms", "p99.9", "max ms")
    head += ("srv us/msg", "gen us/msg", "others", "late", "errors")
    widths = (14, 10, 9, 8, 8, 8, 8, 11, 11, 7, 5, 6)
    say(_row(head, widths))
    for r in results.values():
        per = max(1, r.delivered)
        cells = (
            r.name,
            f"{r.offered_per_s:,.0f}",
            f"{r.per_s:,.0f}",
            f"{r.percentile(50):.2f}",
            f"{r.percentile(99):.2f}",
            f"{r.percentile(99.9):.2f}",
            f"{max(r.latencies_ms, default=math.nan):.2f}",
            f"{r.server_cpu_s / per * 1e6:.1f}",
            f"{r.load_cpu_s / per * 1e6:.1f}",
            f"{r.other_cpu_s / max(r.seconds, 1e-9):.2f}",
            f"{r.undelivered}",
            f"{r.errors}",
        )
        line = _row(cells, widths)
        if r.exhausted:
            line += "  (sealed envelopes ran out: measured over a shorter time)"
        if r.drain_seconds > 2:
            line += f"  (backlog took {r.drain_seconds:.1f} s to drain)"
        say(line)
        for sample in r.error_samples:
            say(f"    error: {sample}")
    say(
        "  (srv/gen us/msg: CPU time of the server / of this load process per delivered message;"
        f" others: cores busy with other processes on this {os.cpu_count()}-core host during the"
        " phase, i.e. noise; late: still undelivered when deliveries stopped)"
    )
    durable, bare = results["durable_sat"], results["bare_sat"]
    paced, bare_paced = results["durable_paced"], results["bare_paced"]
    ratio = durable.per_s / bare.per_s if bare.per_s else math.nan
    p99 = paced.percentile(99)
    say()
    say(
        f"saturation (window {plan.window}/sender): durable {durable.per_s:,.0f} msg/s, bare "
        f"{bare.per_s:,.0f} msg/s, ratio {ratio:.2f} (target >= 0.35: {_met(ratio >= 0.35)})"
    )
    say(
        f"at {plan.rate:,.0f} msg/s offered: durable delivered {paced.per_s:,.0f} msg/s, p50 "
        f"{paced.percentile(50):.2f} ms, p99 {p99:.2f} ms (target <= 10 ms: {_met(p99 <= 10)}); "
        f"bare p50 {bare_paced.percentile(50):.2f} ms, p99 {bare_paced.percentile(99):.2f} ms"
    )
    opened_per_s = idle.sockets / max(idle.open_seconds, 1e-9)
    say(
        f"idle: {idle.sockets:,} authenticated+attached sockets ({idle.failed} failed), opened at "
        f"{opened_per_s:,.0f}/s ({idle.server_cpu_s / max(1, idle.sockets) * 1000:.2f} ms server "
        f"CPU each); server RSS {idle.rss_before_kib / 1024:.0f} -> "
        f"{idle.rss_after_kib / 1024:.0f} MiB = {idle.per_socket_kib:.1f} KiB/socket "
        f"(target <= 30: {_met(idle.per_socket_kib <= 30)}); load process "
        f"+{idle.load_rss_growth_kib / max(1, idle.sockets):.1f} KiB/socket"
    )
    if idle.first_error:
        say(f"  first socket error: {idle.first_error}")
    say(f"total {elapsed:.0f} s")
    summary = {
        "durable_msgs_per_s": round(durable.per_s),
        "bare_msgs_per_s": round(bare.per_s),
        "ratio": round(ratio, 3),
        "p99_ms_at_2000": round(p99, 3),
        "p50_ms_at_2000": round(paced.percentile(50), 3),
        "bare_p99_ms_at_2000": round(bare_paced.percentile(99), 3),
        "bare_p50_ms_at_2000": round(bare_paced.percentile(50), 3),
        "durable_delivered_per_s_at_2000": round(paced.per_s),
        "durable_p50_ms_saturation": round(durable.percentile(50), 3),
        "durable_p99_ms_saturation": round(durable.percentile(99), 3),
        "bare_p50_ms_saturation": round(bare.percentile(50), 3),
        "bare_p99_ms_saturation": round(bare.percentile(99), 3),
        "server_cpu_us_per_msg_saturation": round(
            durable.server_cpu_s / max(1, durable.delivered) * 1e6, 1
        ),
        "bare_server_cpu_us_per_msg_saturation": round(
            bare.server_cpu_s / max(1, bare.delivered) * 1e6, 1
        ),
        "idle_socket_kib": round(idle.per_socket_kib, 2),
        "idle_sockets": idle.sockets,
        "idle_sockets_opened_per_s": round(opened_per_s),
        "other_host_cores_max": round(
            max(r.other_cpu_s / max(r.seconds, 1e-9) for r in results.values()), 2
        ),
        "undelivered": sum(r.undelivered for r in results.values()),
        "errors": sum(r.errors for r in results.values()),
        "pairs": plan.pairs,
        "conversations": args.conversations,
        "window": plan.window,
        "seconds": plan.seconds,
        "warmup_seconds": plan.warmup,
        "rate": plan.rate,
        "payload_bytes": plan.payload_bytes,
        "quick": bool(args.quick),
        "synchronous": "FULL",
        "send_rate_per_second": float(SERVER_SETTINGS["SEND_RATE_PER_SECOND"]),
        "send_burst": int(SERVER_SETTINGS["SEND_BURST"]),
    }
    print(json.dumps(summary), flush=True)


def _row(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    first = f"{cells[0]:<{widths[0]}}"
    return " ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))])


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
