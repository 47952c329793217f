"""The stored audit log: append rate, integration, proof latency and `audit verify` at scale.

Run with `python bench/audit.py [--quick] [--events N] [--database-url URL]` (default: a fresh
SQLite file in a temporary directory, 1,000,000 events; --quick: 100,000). Prints numbers;
not a test. Targets (issue 5): appends >= 2,000/s on SQLite, an inclusion proof on a
1,000,000-event log in < 5 ms, `audit verify` of 1,000,000 events in < 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from securemsg.audit.compliance import Caller, ComplianceService
from securemsg.audit.events import Actor, AuditEvent, Source, Subject
from securemsg.audit.integrator import Integrator
from securemsg.audit.merkle import leaf_hash, verify_inclusion
from securemsg.audit.note import NoteSigner
from securemsg.audit.scan import scan_database
from securemsg.storage import migrate
from securemsg.storage.audit import AuditLog
from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database

ACTORS = [uuid.uuid4() for _ in range(200)]
OFFICER = Actor(uuid.uuid4(), "cora", "compliance")


def event(number: int) -> AuditEvent:
    actor = ACTORS[number % len(ACTORS)]
    return AuditEvent(
        action="login" if number % 7 else "login.failed",
        outcome="success" if number % 7 else "failure",
        actor=Actor(actor, f"user{number % len(ACTORS)}", "client"),
        subject=Subject(actor, f"user{number % len(ACTORS)}"),
        resource=f"session:{uuid.UUID(int=number)}",
        purpose="authentication",
        source=Source("10.1.2.3", f"req-{number}"),
    )


async def append_one_per_transaction(database: Database, count: int, start: int) -> float:
    began = time.perf_counter()
    for number in range(start, start + count):
        async with database.write() as conn:
            await AuditLog(conn).record(event(number), now_ms=number)
    return count / (time.perf_counter() - began)


async def append_concurrently(database: Database, count: int, start: int, tasks: int) -> float:
    async def worker(first: int) -> None:
        for number in range(first, start + count, tasks):
            async with database.write() as conn:
                await AuditLog(conn).record(event(number), now_ms=number)

    began = time.perf_counter()
    await asyncio.gather(*(worker(start + t) for t in range(tasks)))
    return count / (time.perf_counter() - began)


async def append_batched(database: Database, count: int, start: int, batch: int) -> float:
    began = time.perf_counter()
    for first in range(start, start + count, batch):
        events = [event(n) for n in range(first, min(first + batch, start + count))]
        async with database.write() as conn:
            await AuditLog(conn).record_many(events, now_ms=first)
    return count / (time.perf_counter() - began)


async def proof_latency(database: Database, samples: int) -> tuple[list[float], int]:
    async with database.read() as conn:
        latest = await AuditTree(conn).latest_checkpoint()
    assert latest is not None
    size, root = latest.size, latest.root
    times = []
    for _ in range(samples):
        index = random.randrange(size)
        began = time.perf_counter()
        async with database.read() as conn:
            tree = AuditTree(conn)
            proof = await tree.inclusion_proof(index, size)
            leaf = (await tree.leaves_at([index]))[index]
        times.append(time.perf_counter() - began)
        verify_inclusion(leaf_hash(leaf), index, size, proof, root)
    return times, size


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 events instead of 1M")
    parser.add_argument("--events", type=int, help="size of the log to build")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    total = args.events or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
        database = Database.open(url)
        await migrate.upgrade(database)
        signer = NoteSigner.generate("bench.local/securemsg-audit")
        integrator = Integrator(signers=[signer], max_leaves=50_000)
        try:
            await run(database, integrator, signer, total, args.quick)
        finally:
            await database.close()


async def run(
    database: Database, integrator: Integrator, signer: NoteSigner, total: int, quick: bool
) -> None:
    print(f"database: {database.dialect}; log of {total:,} events")
    single = 500 if quick else 2_000
    rate = await append_one_per_transaction(database, single, 0)
    print(f"append, one event per transaction (an audited operation): {rate:,.0f} events/s")
    rate = await append_concurrently(database, single, single, tasks=32)
    print(f"append, one event per transaction, 32 concurrent tasks: {rate:,.0f} events/s")
    done = 2 * single
    rate = await append_batched(database, 20_000, done, batch=100)
    print(f"append, record_many of 100 per transaction: {rate:,.0f} events/s (target >= 2,000)")
    done += 20_000

    began = time.perf_counter()
    rate = await append_batched(database, total - done, done, batch=1_000)
    print(f"fill to {total:,}: record_many of 1,000: {rate:,.0f} events/s")
    began = time.perf_counter()
    await integrator.catch_up(database, now_ms=1)
    seconds = time.perf_counter() - began
    print(f"integrate {total:,} leaves and sign: {seconds:.1f} s = {total / seconds:,.0f} leaves/s")

    times, size = await proof_latency(database, 2_000)
    print(
        f"inclusion proof at size {size:,} (read tx + node SELECT + leaf): "
        f"mean {ms(statistics.mean(times))}, p50 {ms(statistics.median(times))}, "
        f"p99 {ms(statistics.quantiles(times, n=100)[98])} (target < 5 ms)"
    )
    service = ComplianceService(database)
    caller = Caller(OFFICER)
    began = time.perf_counter()
    for _ in range(100):
        await service.event(caller, random.randrange(size), now_ms=2)
    print(
        f"GET-an-event service call (proof + its own audit record, committed): "
        f"{ms((time.perf_counter() - began) / 100)} each"
    )

    began = time.perf_counter()
    report = await scan_database(database, [signer.verifier])
    seconds = time.perf_counter() - began
    print(
        f"audit verify of {report.size:,} events ({report.checkpoints_checked} checkpoints): "
        f"{seconds:.1f} s = {report.size / seconds:,.0f} events/s (target < 60 s for 1M)"
    )


if __name__ == "__main__":
    asyncio.run(main())
