"""Signature worker processes: real `python -m securemsg.server.signatures` processes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest

from securemsg.crypto.envelope import ENVELOPE_PURPOSE
from securemsg.crypto.keys import DeviceKeys
from securemsg.server.signatures import Item, SignatureWorkers, _request, serve
from tests.support.signatures import workers_up


def _items(count: int, *, bad: set[int]) -> list[Item]:
    keys = DeviceKeys.generate()
    items: list[Item] = []
    for index in range(count):
        signed = b"envelope %d" % index
        signature = bytearray(keys.sign(ENVELOPE_PURPOSE, signed))
        if index in bad:
            signature[0] ^= 1
        items.append((keys.signing_key, signed, bytes(signature)))
    return items


@pytest.fixture
async def workers() -> AsyncIterator[SignatureWorkers]:
    started = SignatureWorkers(2)
    started.start()
    await workers_up(started, 2)
    try:
        yield started
    finally:
        await started.close()


async def test_workers_give_a_verdict_per_signature_in_order(workers: SignatureWorkers) -> None:
    checks = [workers.submit(_items(50, bad={0, 17, 49})), workers.submit(_items(3, bad=set()))]
    assert workers.idle == 0
    assert workers.submit(_items(1, bad=set())) is None  # both busy: the caller checks itself
    first, second = [await check for check in checks if check is not None]
    assert first == [i not in {0, 17, 49} for i in range(50)]
    assert second == [True, True, True]
    assert workers.idle == 2


async def test_killed_workers_fail_their_chunk_and_are_replaced(workers: SignatureWorkers) -> None:
    killed = workers.pids
    check = workers.submit(_items(2000, bad=set()))
    assert check is not None
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert await check is None  # the caller checks these sends itself
    await workers_up(workers, 2)
    assert not set(workers.pids) & set(killed)
    again = workers.submit(_items(4, bad={2}))
    assert again is not None
    assert await again == [True, True, False, True]


async def test_a_stopped_worker_fails_its_chunk_in_time_and_is_replaced(
    workers: SignatureWorkers,
) -> None:
    # SIGSTOP: alive but reading nothing (a frozen cgroup, a swapped-out host). A chunk larger
    # than a pipe holds must not leave the sends it carries waiting for ever.
    workers.reply_seconds = 0.5
    stopped = workers.pids
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    check = workers.submit(_items(2000, bad=set()))
    assert check is not None
    assert await asyncio.wait_for(check, timeout=10) is None  # the caller checks these itself
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # the one not asked resumes; the asked one is killed
    await workers_up(workers, 2)
    assert len(set(workers.pids) - set(stopped)) == 1  # a new worker in the stuck one's place


async def test_close_ends_every_worker() -> None:
    workers = SignatureWorkers(2)
    workers.start()
    await workers_up(workers, 2)
    pids = workers.pids
    await workers.close()
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    assert workers.submit(_items(1, bad=set())) is None


async def test_no_processes_means_no_workers() -> None:
    workers = SignatureWorkers(0)
    workers.start()
    await asyncio.sleep(0.2)
    assert not workers.running
    assert workers.submit(_items(1, bad=set())) is None
    await workers.close()


def test_workers_do_not_outlive_a_server_killed_with_sigkill() -> None:
    # A parent that starts workers, prints their pids, then is SIGKILLed: no close, no cleanup.
    parent = textwrap.dedent(
        """
        import asyncio, os, signal
        from securemsg.server.signatures import SignatureWorkers

        async def main():
            workers = SignatureWorkers(2)
            workers.start()
            while workers.idle < 2:
                await asyncio.sleep(0.02)
            print(" ".join(map(str, workers.pids)), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def test_a_worker_ignores_signals_and_stops_when_its_input_closes() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "securemsg.server.signatures"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None
        assert worker.stdout.read(1) == b"\x01"  # ready
        worker.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the process group
        worker.send_signal(signal.SIGTERM)  # and so does a service manager's stop
        worker.stdin.write(_request(_items(2, bad={1})))
        worker.stdin.flush()
        assert worker.stdout.read(2) == b"\x01\x00"
        worker.stdin.close()
        assert worker.wait(timeout=10) == 0
        assert worker.stderr is not None and worker.stderr.read() == b""


def test_a_request_cut_short_ends_the_worker_quietly() -> None:
    whole = _request(_items(3, bad=set()))
    for cut in (2, 4 + 5, len(whole) - 1):
        replies = io.BytesIO()
        serve(io.BytesIO(whole[:cut]), replies)
        assert replies.getvalue() == b"\x01"  # ready, and no verdicts for a partial request


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent (init here) has yet to reap it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
