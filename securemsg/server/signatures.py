"""Envelope signature checks in worker processes, for sends that queue up under load.

An Ed25519 check in PyNaCl releases the GIL for the C call but takes it back before and after.
Threads that check while the event loop runs Python queue for the GIL at every call: measured
under bench/relay.py saturation, a 390-envelope batch took 37 ms of wall time on two threads for
11 ms of CPU, and that wait held up the batch's commit and every `accepted` behind it. A worker
process has its own interpreter: the group-commit loop hands it a chunk of queued sends while
the batch before them commits (delivery.py, "checks ahead"), over a pipe, as plain bytes.

The workers are `python -P -m securemsg.server.signatures`, started on the server's first send
(about 60 ms of CPU each: better then than in the middle of the first burst, and never for a
server nobody sends to). A worker exits when its input closes, so it never outlives the server,
even one killed with SIGKILL; it ignores SIGINT and SIGTERM, which a terminal or a service
manager sends the whole process group, and stops when the server closes it. A worker that dies,
or takes `_REPLY_SECONDS` to answer (stopped, swapped out), is killed and replaced; the sends it
was checking are checked by their batch instead (delivery.py), so no check is ever skipped.

Wire format (native to this module; both ends are this file). Request: u32 count, then per item
u32 key length, u32 signed-part length, u32 signature length and the three byte strings (little
endian). Reply: one byte per item, 1 if its signature verifies, else 0. On start a worker writes
one byte (1) to say it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO

from securemsg.crypto.envelope import check_envelope_signatures

log = logging.getLogger("securemsg.signatures")

# (registered signing key of the sender device, signed part, signature)
Item = tuple[bytes, bytes, bytes]

_COUNT = struct.Struct("<I")
_LENGTHS = struct.Struct("<III")
_READY = b"\x01"
_STOP_SECONDS = 2.0
_REPLY_SECONDS = 10.0  # a chunk takes milliseconds: a worker this late is stuck, and replaced
_RESTART_SECONDS = 1.0


class _Worker:
    __slots__ = ("process", "reader", "writer")

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.writer = process.stdin
        self.reader = process.stdout

    def stop(self) -> None:
        """Close its input: it answers what it has, then exits."""
        with contextlib.suppress(OSError):
            self.writer.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def ended(self) -> int:
        """Once it has exited: its exit code, with both pipes closed and the process reaped."""
        code = await self.process.wait()
        self.stop()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        with contextlib.suppress(OSError):
            while await self.reader.read(1 << 16):
                pass
        return code


class SignatureWorkers:
    """`processes` worker processes; `submit(items)` has an idle one check a chunk. Event loop
    only. One task per worker (`_run`) starts it, watches it and replaces it if it dies."""

    def __init__(self, processes: int) -> None:
        self.processes = max(0, processes)
        self.reply_seconds = _REPLY_SECONDS
        self._started = False
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._all: set[_Worker] = set()  # started and not yet ended, ready or not
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers that are up."""
        return [worker.process.pid for worker in (*self._idle, *self._busy)]

    @property
    def running(self) -> bool:
        """Whether any worker is up (idle or checking)."""
        return bool(self._idle or self._busy)

    def start(self) -> None:
        """Start the workers in the background (once; nothing with no processes)."""
        if self._started:
            return
        self._started = True
        for _ in range(self.processes):
            self._start_one()

    def submit(self, items: Sequence[Item]) -> asyncio.Task[list[bool] | None] | None:
        """Hand `items` to an idle worker now; None if none is idle.

        The task's result is a verdict per item (True: the signature verifies), or None if the
        worker failed (it is replaced).
        """
        if not self._idle:
            return None
        worker = self._idle.pop()
        self._busy.add(worker)
        return asyncio.get_running_loop().create_task(self._reply(worker, items))

    async def close(self) -> None:
        """Stop every worker and wait until each has exited (killing any that will not)."""
        self._closed = True
        self._idle.clear()
        for worker in self._all:
            worker.stop()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=_STOP_SECONDS)
            if late:
                for worker in self._all:
                    worker.kill()
                await asyncio.wait(late)

    async def _reply(self, worker: _Worker, items: Sequence[Item]) -> list[bool] | None:
        try:
            async with asyncio.timeout(self.reply_seconds):  # a stopped worker reads nothing
                worker.writer.write(_request(items))
                await worker.writer.drain()
                reply = await worker.reader.readexactly(len(items))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self._busy.discard(worker)
            log.warning("signature worker %d failed: %r", worker.process.pid, exc)
            worker.kill()  # its task starts another
            return None
        except BaseException:  # cancelled mid-request: the worker's reply would be misread
            self._busy.discard(worker)
            worker.kill()
            raise
        self._busy.discard(worker)
        if not self._closed:
            self._idle.append(worker)
        return [verdict == 1 for verdict in reply]

    def _start_one(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run(), name="signature-worker")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        """Start one worker, serve with it until it exits, then (still running) start another."""
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # never import from the working directory: only the installed securemsg
                "-m",
                "securemsg.server.signatures",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("signature worker did not start: %s", exc)
            return
        worker = _Worker(process)
        self._all.add(worker)
        ready = False
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                ready = await worker.reader.readexactly(len(_READY)) == _READY
            if ready and not self._closed:
                self._idle.append(worker)
            else:
                worker.stop()
            code = await worker.ended()
        finally:
            self._all.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            self._busy.discard(worker)
        if self._closed:
            return
        if not ready:  # it cannot start here: replacing it would only fail again
            log.error("signature worker did not start (exit code %s); checking in-thread", code)
            return
        log.warning("signature worker %d exited (%s); starting another", process.pid, code)
        await asyncio.sleep(_RESTART_SECONDS)  # one that keeps dying costs a start a second
        if not self._closed:
            self._start_one()


def _request(items: Sequence[Item]) -> bytes:
    parts = [_COUNT.pack(len(items))]
    for key, signed, signature in items:
        parts += (_LENGTHS.pack(len(key), len(signed), len(signature)), key, signed, signature)
    return b"".join(parts)


# -- the worker process -----------------------------------------------------------------------


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until `requests` ends (the server closed it, or is gone)."""
    replies.write(_READY)
    replies.flush()
    while True:
        head = requests.read(_COUNT.size)
        if len(head) < _COUNT.size:
            return
        (count,) = _COUNT.unpack(head)
        items: list[Item] = []
        for _ in range(count):
            lengths = requests.read(_LENGTHS.size)
            if len(lengths) < _LENGTHS.size:
                return
            key_len, signed_len, signature_len = _LENGTHS.unpack(lengths)
            key = requests.read(key_len)
            signed = requests.read(signed_len)
            signature = requests.read(signature_len)
            if len(key) + len(signed) + len(signature) < key_len + signed_len + signature_len:
                return
            items.append((key, signed, signature))
        replies.write(bytes(check_envelope_signatures(items)))
        replies.flush()


if __name__ == "__main__":
    # A terminal's Ctrl-C and a service manager's SIGTERM reach the whole process group; the
    # server stops its workers itself (closing their input) once it has drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):  # the server is gone: nobody to answer
        serve(sys.stdin.buffer, sys.stdout.buffer)
