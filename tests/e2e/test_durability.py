"""Nothing acknowledged is lost: crashes, restarts, and readers that stop reading."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.peer import pair
from tests.support.server import ServerProcess, running_server
from tests.support.ws import until_closed


async def test_sigkill_right_after_accepted_loses_nothing(server: ServerProcess) -> None:
    tess, carl, conversation = pair(server)
    await tess.connect()
    to_carl = {carl.device_id: carl.device.encryption_key}
    texts = [f"before the crash {i}" for i in range(30)]
    for text in texts:
        await tess.send_raw(tess.seal(conversation, to_carl, text))
    replies = [await tess.next_of("accepted", "error") for _ in texts]
    assert all(r["type"] == "accepted" for r in replies)
    server.kill()  # SIGKILL: no shutdown hook runs
    await tess.close()
    server.start()
    tess.server = carl.server = server
    await carl.connect()
    got = [carl.open((await carl.next_of("deliver"))["envelope"], tess) for _ in texts]
    assert got == texts
    await carl.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_reader_that_stops_reading_is_cut_off_and_server_memory_stays_bounded(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(
        tmp_path,
        sqlite_url,
        outbound_queue_bytes=262144,
        send_rate_per_second=100000,
        send_burst=100000,
    ) as server:
        tess, carl, conversation = pair(server)
        assert server.process is not None
        pid = server.process.pid

        async def run() -> None:
            await tess.connect()
            await carl.connect()  # attached, then never reads again
            await asyncio.sleep(0.5)
            baseline = _rss_kib(pid)
            to_carl = {carl.device_id: carl.device.encryption_key}
            payload = os.urandom(6000).hex()  # ~12 KB envelopes: 5,000 of them are ~60 MB
            peak = baseline
            for _burst in range(50):
                for _ in range(100):
                    await tess.send_raw(tess.seal(conversation, to_carl, payload))
                for _ in range(100):
                    reply = await tess.next_of("accepted", "error")
                    assert reply["type"] == "accepted", reply
                peak = max(peak, _rss_kib(pid))
            assert carl.ws is not None
            code, _ = await until_closed(carl.ws, timeout=30)
            assert code == 4503
            # 60 MB went to a reader that read nothing; the server held a bounded amount of it.
            assert peak - baseline < 40_000, (baseline, peak)
            # The slow reader reconnects and resumes from its cursor: everything is still there.
            await carl.connect()
            seqs = []
            while len(seqs) < 5000:
                frame = await carl.next_of("deliver")
                seqs.append(frame["seq"])
            assert seqs == list(range(1, 5001))
            await tess.close()
            await carl.close()

        asyncio.run(run())
