"""A login flood, run as its own process: `python -m tests.adversarial.flood URL SECONDS VICTIM`.

`--concurrency` connections each post a login with a wrong password every `--period` seconds
(keep-alive; 0 means back to back, as fast as the server answers) for SECONDS. By default half
the connections claim one address and half claim a fresh address per request
(`X-Forwarded-For`, trusted from 127.0.0.1); half of each half guess at VICTIM's password, the
rest at unknown usernames. Prints a JSON summary of the statuses by source and
target on stdout. Requests are prebuilt bytes on raw sockets and the process runs niced: an
attacker does not share the server's cores, so the flood generator should cost the machine as
little as possible and the test that measures delivery meanwhile should see the server's
behaviour, not the generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import time
from urllib.parse import urlsplit

SINGLE_ADDRESS = "203.0.113.7"


def _request(host: str, username: str, password: str, address: str) -> bytes:
    body = json.dumps({"username": username, "password": password}).encode()
    head = (
        f"POST /v1/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-For: {address}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def flood(
    url: str, seconds: float, victim: str, concurrency: int, sources: str, period: float
) -> dict[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counts: collections.Counter[str] = collections.Counter()
    numbers = itertools.count()
    deadline = time.monotonic() + seconds

    async def connection(worker: int) -> None:
        spread = {"both": worker % 2 == 1, "spread": True, "single": False}[sources]
        at_victim = worker % 4 < 2
        source = "spread" if spread else "single"
        target = "victim" if at_victim else "unknown"
        reader, writer = await asyncio.open_connection(host, port)
        next_at = time.monotonic() + period * worker / concurrency  # spread the starts
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += period
                n = next(numbers)
                address = (
                    f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" if spread else SINGLE_ADDRESS
                )
                username = victim if at_victim else f"ghost{n}"
                writer.write(_request(host, username, f"guess {n}", address))
                counts[f"{source} {target} {await _status(reader)}"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(worker) for worker in range(concurrency)))
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("victim")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--sources", choices=["both", "spread", "single"], default="both")
    parser.add_argument("--period", type=float, default=1.0)
    args = parser.parse_args()
    os.nice(10)
    counts = asyncio.run(
        flood(args.url, args.seconds, args.victim, args.concurrency, args.sources, args.period)
    )
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
