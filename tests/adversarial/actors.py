"""Servers, accounts and conversations for the adversarial suite.

Accounts are provisioned straight through `AdminService` on the server's own database (the CLI
costs a process start per account); the server itself always runs as the real `securemsg serve`
process. `serving` yields that process on SQLite or on a fresh PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.db import fresh_database
from tests.support.server import ServerProcess, provision, run_blocking, running_server

# Argon2id as deployed (tests.support.server.FAST_ARGON2 is what the tests' server runs).
REAL_ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456}


@contextlib.contextmanager
def serving(directory: Path, backend: str = "sqlite", **settings: Any) -> Iterator[ServerProcess]:
    """The real server process on a fresh database of `backend`, with these settings."""
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    with fresh_database(backend, data) as url, running_server(data, url, **settings) as server:
        yield server


def provision_now(
    server: ServerProcess,
    accounts: Mapping[str, str],
    conversations: Sequence[tuple[str, str]] = (),
    **options: Any,
) -> list[uuid.UUID]:
    """Provision accounts and conversations from synchronous code (fixtures); returns the
    conversation ids."""
    return run_blocking(provision(server.database_url, accounts, conversations, **options))[1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def server_pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def tracebacks(log: str) -> list[str]:
    """Each traceback in a server log, with the line that introduced it."""
    lines = log.splitlines()
    return [
        "\n".join(lines[max(0, i - 1) : i + 12])
        for i, line in enumerate(lines)
        if line.startswith("Traceback")
    ]
