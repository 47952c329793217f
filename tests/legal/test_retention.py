"""Retention as a service on a real database (each backend), with time passed in: what expires,
the `expired_seq` a resume turns into `gap`, and that nothing under a legal hold is ever deleted."""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from securemsg.server.retention import RetentionReport, RetentionService
from securemsg.settings import Settings
from securemsg.storage.accounts import AccountStore, Role
from securemsg.storage.audit import AuditLog, EventFilter
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from securemsg.storage.legal import Hold, HoldStore
from securemsg.storage.messages import MessageStore, NewEnvelope
from securemsg.storage.models import deliveries, devices, envelopes

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # the day the old messages arrive
LATER = T0 + 40 * DAY_MS  # past the 30-day default for both kinds of retention


@dataclasses.dataclass
class Clinic:
    """Tess (therapist) with two clients: conversation A with carl, B with olga; one device
    each; cora places holds."""

    database: Database
    ids: dict[str, uuid.UUID]
    device: dict[str, uuid.UUID]
    a: uuid.UUID
    b: uuid.UUID

    async def send(self, conversation: uuid.UUID, to: list[str], *, at_ms: int) -> int:
        """Store one envelope and queue it to the named accounts' devices; its row id."""
        async with self.database.write() as conn:
            store = MessageStore(conn)
            [row_id] = await store.insert_envelopes(
                [NewEnvelope(conversation, os.urandom(16), self.device["tess"], at_ms, b"x" * 300)],
                now_ms=at_ms,
            )
            targets = [self.device[name] for name in to]
            first = await store.allocate_seqs({d: 1 for d in targets})
            await store.insert_deliveries([(d, first[d], row_id) for d in targets])
            return int(row_id)

    async def hold(
        self, *, account: str | None = None, conversation: uuid.UUID | None = None
    ) -> Hold:
        hold = Hold(
            uuid.uuid4(),
            None if account is None else self.ids[account],
            conversation,
            "litigation",
            self.ids["cora"],
            T0,
        )
        async with self.database.write() as conn:
            await HoldStore(conn).insert(hold)
        return hold

    async def release(self, hold: Hold) -> None:
        async with self.database.write() as conn:
            assert await HoldStore(conn).release(hold.id, by=self.ids["cora"], now_ms=LATER)

    async def state(self) -> tuple[dict[str, list[int]], dict[str, int], set[int]]:
        """Queued seqs and `expired_seq` per device owner, and the stored envelope row ids."""
        names = {d: name for name, d in self.device.items()}
        async with self.database.read() as conn:
            queued: dict[str, list[int]] = {name: [] for name in self.device}
            rows = await conn.execute(
                select(deliveries.c.device_id, deliveries.c.seq).order_by(deliveries.c.seq)
            )
            for device_id, seq in rows:
                queued[names[device_id]].append(int(seq))
            expired = {
                names[d]: int(e)
                for d, e in await conn.execute(select(devices.c.id, devices.c.expired_seq))
            }
            stored = {int(r[0]) for r in await conn.execute(select(envelopes.c.id))}
        return queued, expired, stored

    async def retention_events(self) -> list[dict[str, Any]]:
        async with self.database.read() as conn:
            found = await AuditLog(conn).page(EventFilter(action="retention.deleted"), limit=1000)
        return [e.fields for e in found]


@pytest.fixture
async def clinic(database: Database) -> Clinic:
    ids: dict[str, uuid.UUID] = {}
    device: dict[str, uuid.UUID] = {}
    async with database.write() as conn:
        store = AccountStore(conn)
        for name, role in (
            ("tess", Role.THERAPIST),
            ("carl", Role.CLIENT),
            ("olga", Role.CLIENT),
            ("cora", Role.COMPLIANCE),
        ):
            account = await store.create(username=name, role=role, password_hash="!", now_ms=T0)
            ids[name] = account.id
        conversations = ConversationStore(conn)
        a = await conversations.create(therapist_id=ids["tess"], client_id=ids["carl"], now_ms=T0)
        b = await conversations.create(therapist_id=ids["tess"], client_id=ids["olga"], now_ms=T0)
        for name in ("tess", "carl", "olga"):
            device[name] = uuid.uuid4()
            await conn.execute(
                devices.insert().values(
                    id=device[name],
                    account_id=ids[name],
                    signing_key=os.urandom(32),
                    encryption_key=os.urandom(32),
                    certificate=b"cert",
                    created_ms=T0,
                )
            )
    return Clinic(database, ids, device, a, b)


def retention(database: Database, **settings: Any) -> RetentionService:
    return RetentionService(database, Settings(**settings))


async def test_old_undelivered_deliveries_expire_and_the_device_records_how_far(
    clinic: Clinic,
) -> None:
    old = [await clinic.send(clinic.a, ["carl"], at_ms=T0 + i) for i in range(3)]
    recent = await clinic.send(clinic.a, ["carl"], at_ms=LATER - DAY_MS)
    report = await retention(clinic.database).run(now_ms=LATER)
    assert report == RetentionReport(deliveries=3, devices=1, envelopes=3)
    queued, expired, stored = await clinic.state()
    assert queued["carl"] == [4] and expired["carl"] == 3
    assert stored == {recent} and not set(old) & stored
    events = await clinic.retention_events()
    assert [e["details"] for e in events] == [
        {"undelivered": 3, "devices": 1},
        {"envelopes": 3},
    ]
    assert {(e["actor_name"], e["actor_role"], e["outcome"]) for e in events} == {
        ("retention", "system", "success")
    }
    # Nothing more to do: a second pass deletes nothing and records nothing.
    assert await retention(clinic.database).run(now_ms=LATER) == RetentionReport()
    assert len(await clinic.retention_events()) == 2


async def test_a_delivered_envelope_waits_for_its_own_ttl_and_zero_disables_each_kind(
    clinic: Clinic,
) -> None:
    delivered = await clinic.send(clinic.b, [], at_ms=T0)  # no queue entry left: delivered
    queued = await clinic.send(clinic.a, ["carl"], at_ms=T0)
    database = clinic.database
    assert await retention(database, retention_delivered_seconds=0).run(
        now_ms=LATER
    ) == RetentionReport(1, 1, 0)
    assert (await clinic.state())[2] == {delivered, queued}
    assert (
        await retention(database, retention_delivered_seconds=50 * 86400).run(now_ms=LATER)
        == RetentionReport()
    )
    assert await retention(database).run(now_ms=LATER) == RetentionReport(0, 0, 2)
    assert (await clinic.state())[2] == set()
    await clinic.send(clinic.a, ["carl"], at_ms=T0)
    assert (
        await retention(database, retention_undelivered_seconds=0).run(now_ms=LATER)
        == RetentionReport()
    )


@pytest.mark.parametrize("held", ["conversation", "client", "therapist"])
async def test_retention_never_deletes_held_data_and_a_released_hold_lets_it_proceed(
    clinic: Clinic, held: str
) -> None:
    in_a = await clinic.send(clinic.a, ["carl"], at_ms=T0)  # undelivered
    in_a_read = await clinic.send(clinic.a, [], at_ms=T0)  # delivered
    in_b = await clinic.send(clinic.b, ["olga"], at_ms=T0)
    if held == "conversation":
        hold = await clinic.hold(conversation=clinic.a)
    else:
        hold = await clinic.hold(account="carl" if held == "client" else "tess")
    await retention(clinic.database).run(now_ms=LATER)
    queued, expired, stored = await clinic.state()
    assert queued["carl"] == [1] and expired["carl"] == 0
    assert {in_a, in_a_read} <= stored
    if held == "therapist":  # tess is a member of B too
        assert queued["olga"] == [1] and in_b in stored
    else:
        assert queued["olga"] == [] and in_b not in stored

    await clinic.release(hold)
    await retention(clinic.database).run(now_ms=LATER)
    queued, expired, stored = await clinic.state()
    assert queued == {"tess": [], "carl": [], "olga": []} and stored == set()
    assert expired["carl"] == 1


async def test_a_held_delivery_stops_expiry_of_the_later_ones_of_its_device(
    clinic: Clinic,
) -> None:
    # Tess's device gets seq 1 from B, 2 from A (held), 3 from B: all old.
    for conversation in (clinic.b, clinic.a, clinic.b):
        await clinic.send(conversation, ["tess"], at_ms=T0)
    hold = await clinic.hold(conversation=clinic.a)
    report = await retention(clinic.database).run(now_ms=LATER)
    assert report.deliveries == 1
    queued, expired, _ = await clinic.state()
    # A resume gets `gap 1..1`; seq 3 must stay queued (expired_seq may never skip it).
    assert queued["tess"] == [2, 3] and expired["tess"] == 1
    await clinic.release(hold)
    await retention(clinic.database).run(now_ms=LATER)
    queued, expired, _ = await clinic.state()
    assert queued["tess"] == [] and expired["tess"] == 3


async def test_large_backlogs_are_deleted_in_batches(clinic: Clinic) -> None:
    for i in range(7):
        if i % 2:
            await clinic.send(clinic.a, ["tess", "carl"], at_ms=T0 + i)
        else:
            await clinic.send(clinic.b, ["tess", "olga"], at_ms=T0 + i)
    report = await retention(clinic.database, retention_batch_rows=2).run(now_ms=LATER)
    queued, expired, stored = await clinic.state()
    assert queued == {"tess": [], "carl": [], "olga": []} and stored == set()
    assert expired == {"tess": 7, "carl": 3, "olga": 4}
    assert report == RetentionReport(deliveries=14, devices=3, envelopes=7)
    events = await clinic.retention_events()
    assert len(events) > 2  # one per batch that deleted something
    assert sum(e["details"].get("undelivered", 0) for e in events) == 14
    async with clinic.database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(envelopes))).scalar() == 0
