"""Retention: delete what the server no longer needs to hold, except under legal hold.

A pass (`RetentionService.run`, every `retention_interval_seconds` in the background) removes
(a) queued deliveries of envelopes older than `retention_undelivered_seconds` that their device
never fetched, raising the device's `expired_seq` so its next resume gets a `gap` frame, and
(b) envelopes older than `retention_delivered_seconds` with no queued delivery left. Nothing an
active hold covers is touched (storage/retention.py says what a hold covers). Time is passed in.

Each batch is one short write transaction: the hold lock, then (for deliveries) the delivery
writers' lock so queue bookkeeping never interleaves with a delivery batch, at most
`retention_batch_rows` rows looked at, whole-batch deletes, and one audit event for what the
batch deleted. A device's queue expires from its oldest end only, so `expired_seq` never skips a
delivery that is still queued: a held or recent delivery stops expiry for that device's later
ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Mapping

from securemsg.audit.events import Actor, AuditAction, AuditEvent, Detail, Outcome
from securemsg.clock import Clock
from securemsg.settings import Settings
from securemsg.storage.audit import AuditLog
from securemsg.storage.database import Database
from securemsg.storage.errors import StorageError
from securemsg.storage.legal import HoldStore
from securemsg.storage.retention import DeliveryKey, EnvelopeKey, RetentionStore

log = logging.getLogger("securemsg.retention")

ACTOR = Actor(None, "retention", "system")
PURPOSE = "retention"


@dataclasses.dataclass(frozen=True)
class RetentionReport:
    """What one pass deleted."""

    deliveries: int = 0
    devices: int = 0
    envelopes: int = 0


class RetentionService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.interval_seconds = settings.retention_interval_seconds
        self.undelivered_ms = int(settings.retention_undelivered_seconds * 1000)
        self.delivered_ms = int(settings.retention_delivered_seconds * 1000)
        self.batch = max(1, settings.retention_batch_rows)
        self._task: asyncio.Task[None] | None = None

    async def run(self, *, now_ms: int) -> RetentionReport:
        """One pass: expire old undelivered deliveries, then delete old envelopes."""
        deliveries, devices = 0, 0
        if self.undelivered_ms > 0:
            deliveries, devices = await self._expire_deliveries(
                now_ms - self.undelivered_ms, now_ms
            )
        envelopes = 0
        if self.delivered_ms > 0:
            envelopes = await self._delete_envelopes(now_ms - self.delivered_ms, now_ms)
        return RetentionReport(deliveries, devices, envelopes)

    async def _expire_deliveries(self, cutoff_ms: int, now_ms: int) -> tuple[int, int]:
        after: DeliveryKey | None = None
        blocked: set[uuid.UUID] = set()  # devices whose oldest remaining delivery must stay
        expired: set[uuid.UUID] = set()
        total = 0
        while True:
            async with self.database.write() as conn:
                await HoldStore(conn).lock()
                await self.database.serialise_writers(conn)
                store = RetentionStore(conn)
                rows = await store.walk_deliveries(
                    cutoff_ms=cutoff_ms, after=after, limit=self.batch
                )
                through: dict[uuid.UUID, int] = {}
                count = 0
                for device_id, seq, expirable in rows:
                    if device_id in blocked:
                        continue
                    if expirable:
                        through[device_id] = seq
                        count += 1
                    else:
                        blocked.add(device_id)
                if through:
                    await store.expire(through)
                    event = _event({"undelivered": count, "devices": len(through)})
                    await AuditLog(conn).record(event, now_ms=now_ms)
            total += count
            expired.update(through)
            if len(rows) < self.batch:
                return total, len(expired)
            after = (rows[-1][0], rows[-1][1])

    async def _delete_envelopes(self, cutoff_ms: int, now_ms: int) -> int:
        after: EnvelopeKey | None = None
        total = 0
        while True:
            async with self.database.write() as conn:
                await HoldStore(conn).lock()
                store = RetentionStore(conn)
                keys = await store.walk_envelopes(
                    cutoff_ms=cutoff_ms, after=after, limit=self.batch
                )
                if keys:
                    await store.delete_envelopes([row_id for _, row_id in keys])
                    await AuditLog(conn).record(_event({"envelopes": len(keys)}), now_ms=now_ms)
            total += len(keys)
            if len(keys) < self.batch:
                return total
            after = keys[-1]

    # -- the background task -------------------------------------------------------------

    def start(self, clock: Clock) -> None:
        """Run a pass every `retention_interval_seconds` (none when it is 0) until `stop`."""
        if self.interval_seconds > 0:
            self._task = asyncio.create_task(self._loop(clock), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, clock: Clock) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                report = await self.run(now_ms=clock.now_ms())
            except StorageError as exc:  # the audit log refused, or the database is away
                log.warning("retention pass failed, retrying next interval: %s", exc)
                continue
            if report != RetentionReport():
                log.info(
                    "retention removed %d undelivered deliveries (%d devices), %d envelopes",
                    report.deliveries,
                    report.devices,
                    report.envelopes,
                )


def _event(details: Mapping[str, Detail]) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.RETENTION_DELETED,
        outcome=Outcome.SUCCESS,
        actor=ACTOR,
        purpose=PURPOSE,
        details=details,
    )
