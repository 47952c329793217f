"""Argon2id password hashing off the event loop, behind a bounded queue.

Hashes run in a small dedicated thread pool (argon2-cffi releases the GIL), at most
`max_concurrent_hashes` at once, with at most `max_queued_logins` waiting; beyond that a login is
refused at once as overloaded, so a login flood cannot starve message delivery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from securemsg.errors import SecuremsgError
from securemsg.settings import Settings

T = TypeVar("T")


HASHING_NICENESS = 10


def _below_the_event_loop() -> None:
    """Run this hashing thread at a lower CPU priority than the rest of the process, so that
    under a login flood hashes get the CPU that the event loop and database threads leave, and
    message delivery is not starved (Linux gives each thread its own nice value)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


class HashingOverloaded(SecuremsgError):
    """Too many logins are already waiting for a hash."""


class PasswordHashing:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.max_concurrent_hashes,
            thread_name_prefix="argon2",
            initializer=_below_the_event_loop,
        )
        self._capacity = settings.max_concurrent_hashes + settings.max_queued_logins
        self._in_flight = 0
        # Verified against when the username is unknown, so both failures cost the same.
        self._dummy_hash = self._hasher.hash("securemsg-dummy-password")

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when `password` matches; an unknown account passes None and always fails."""
        target = self._dummy_hash if password_hash is None else password_hash
        ok = await self._run(lambda: self._verify_sync(target, password))
        return ok and password_hash is not None

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._in_flight >= self._capacity:
            raise HashingOverloaded("too many logins in progress")
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn)
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
