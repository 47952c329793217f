"""SQLite's batch writer thread: the same rows as the async engine, one transaction per job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from securemsg.storage import migrate
from securemsg.storage.accounts import AccountStore, Role
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from securemsg.storage.devices import DeviceStore
from securemsg.storage.errors import StorageError
from securemsg.storage.messages import BatchStore, MessageStore, NewEnvelope
from securemsg.storage.writer import SqliteWriter

NOW = 1_700_000_000_000


@dataclass
class World:
    database: Database
    therapist: uuid.UUID
    client: uuid.UUID
    device: uuid.UUID  # the client's
    conversation: uuid.UUID


@pytest.fixture
async def world(sqlite_url: str) -> AsyncIterator[World]:
    database = Database.open(sqlite_url)
    await migrate.upgrade(database)
    async with database.write() as conn:
        therapist = await AccountStore(conn).create(
            username="tess", role=Role.THERAPIST, password_hash="x", now_ms=NOW
        )
        client = await AccountStore(conn).create(
            username="carl", role=Role.CLIENT, password_hash="x", now_ms=NOW
        )
        device = uuid.uuid4()
        await DeviceStore(conn).add(
            device_id=device,
            account_id=client.id,
            signing_key=b"k" * 32,
            encryption_key=b"e" * 32,
            certificate=b"c",
            now_ms=NOW,
        )
        conversation = await ConversationStore(conn).create(
            therapist_id=therapist.id, client_id=client.id, now_ms=NOW
        )
    assert database.has_batch_writer
    try:
        yield World(database, therapist.id, client.id, device, conversation)
    finally:
        await database.close()


def _envelope(world: World, n: int) -> NewEnvelope:
    return NewEnvelope(world.conversation, bytes([n]) * 16, world.device, NOW, b"data%d" % n)


async def test_rows_written_on_the_thread_read_back_the_same_through_the_async_engine(
    world: World,
) -> None:
    def job(store: BatchStore) -> tuple[list[int], dict[uuid.UUID, int]]:
        ids = store.insert_envelopes([_envelope(world, 1), _envelope(world, 2)], now_ms=NOW)
        first = store.allocate_seqs({world.device: 2})
        store.insert_deliveries([(world.device, first[world.device] + i, ids[i]) for i in (0, 1)])
        return ids, first

    ids, first = await world.database.write_batch(job)
    assert first == {world.device: 1}
    keys = [(world.conversation, bytes([n]) * 16) for n in (1, 2, 3)]

    def lookups(store: BatchStore) -> tuple[object, ...]:
        return (
            store.existing(keys),
            store.members([world.conversation]),
            store.active_devices([world.client, world.therapist]),
            store.supervisors([world.conversation], now_ms=NOW),
        )

    on_thread = await world.database.write_batch(lookups)
    async with world.database.read() as conn:
        store = MessageStore(conn)
        on_loop = (
            await store.existing(keys),
            await store.members([world.conversation]),
            await store.active_devices([world.client, world.therapist]),
            await store.supervisors([world.conversation], now_ms=NOW),
        )
        queued = await store.queued(world.device, after=0, limit=10)
        cursor = await store.cursor(world.device)
    assert on_thread == on_loop
    assert [e.id for e in on_loop[0].values()] == ids  # type: ignore[attr-defined]
    assert [(q.seq, q.data, q.kind, q.conversation_id) for q in queued] == [
        (1, b"data1", "message", world.conversation),
        (2, b"data2", "message", world.conversation),
    ]
    assert cursor == (2, 0, 0)

    await world.database.write_batch(lambda store: store.acknowledge({world.device: 1}))
    async with world.database.read() as conn:
        queued = await MessageStore(conn).queued(world.device, after=0, limit=9)
        assert [q.seq for q in queued] == [2]
        assert await MessageStore(conn).cursor(world.device) == (2, 1, 0)


async def test_envelope_ids_continue_from_either_writer(world: World) -> None:
    (a,) = await world.database.write_batch(
        lambda store: store.insert_envelopes([_envelope(world, 1)], now_ms=NOW)
    )
    async with world.database.write() as conn:
        (b,) = await MessageStore(conn).insert_envelopes([_envelope(world, 2)], now_ms=NOW)
    (c,) = await world.database.write_batch(
        lambda store: store.insert_envelopes([_envelope(world, 3)], now_ms=NOW)
    )
    assert (a, b, c) == (1, 2, 3)


async def test_a_job_that_raises_is_rolled_back_and_its_error_comes_back(world: World) -> None:
    def job(store: BatchStore) -> None:
        store.insert_envelopes([_envelope(world, 1)], now_ms=NOW)
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await world.database.write_batch(job)

    def broken(store: BatchStore) -> None:
        store.conn.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StorageError):
        await world.database.write_batch(broken)
    async with world.database.read() as conn:
        assert await MessageStore(conn).existing([(world.conversation, b"\x01" * 16)]) == {}
    # The writer carries on after both.
    assert await world.database.write_batch(lambda store: store.allocate_seqs({world.device: 1}))


async def test_thread_and_async_writers_interleave_without_losing_a_sequence_number(
    world: World,
) -> None:
    async def on_thread() -> int:
        first = await world.database.write_batch(
            lambda store: store.allocate_seqs({world.device: 1})
        )
        return first[world.device]

    async def on_loop() -> int:
        async with world.database.write() as conn:
            first = await MessageStore(conn).allocate_seqs({world.device: 1})
        return first[world.device]

    got = await asyncio.gather(*(on_thread() if i % 2 else on_loop() for i in range(40)))
    assert sorted(got) == list(range(1, 41))


async def test_other_processes_wait_in_the_busy_handler(world: World, sqlite_url: str) -> None:
    other = Database.open(sqlite_url)  # its own turns: only SQLite's lock orders the two
    try:

        async def on_other() -> int:
            async with other.write() as conn:
                first = await MessageStore(conn).allocate_seqs({world.device: 1})
            return first[world.device]

        async def on_thread() -> int:
            first = await world.database.write_batch(
                lambda store: store.allocate_seqs({world.device: 1})
            )
            return first[world.device]

        got = await asyncio.gather(*(on_thread() if i % 2 else on_other() for i in range(20)))
        assert sorted(got) == list(range(1, 21))
    finally:
        await other.close()


async def test_checkpoints_run_beside_the_writer_never_inside_a_commit(
    world: World, sqlite_url: str
) -> None:
    path = sqlite_url.split("///", 1)[1]
    writer = SqliteWriter(path, checkpoint_bytes=1, idle_seconds=0.05)
    try:
        await writer.run(lambda conn: conn.execute("UPDATE devices SET last_seq = 5"), weight=1)
        for _ in range(200):
            if writer.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert writer.checkpoints >= 1
        wal = await writer.run(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone())
        assert wal == (0,)  # never inside a commit
    finally:
        await asyncio.to_thread(writer.close)
    with pytest.raises(StorageError):
        await writer.run(lambda conn: None)


async def test_prepare_runs_first_outside_the_transaction(world: World) -> None:
    seen: list[str] = []

    def prepare() -> None:
        seen.append("prepare")

    def job(store: BatchStore) -> bool:
        seen.append("job")
        return store.conn.in_transaction

    assert await world.database.write_batch(job, prepare=prepare) is True
    assert seen == ["prepare", "job"]

    def refuse() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await world.database.write_batch(job, prepare=refuse)
    assert seen == ["prepare", "job"]  # the job never ran


async def test_batches_larger_than_one_statement_allows_are_written_whole(world: World) -> None:
    # 12,000 deliveries of 3 values each is more than one statement's parameters (messages.py
    # writes many rows per INSERT): every row must still land, in order, exactly once.
    rows = 12_000

    def job(store: BatchStore) -> int:
        (envelope,) = store.insert_envelopes([_envelope(world, 1)], now_ms=NOW)
        first = store.allocate_seqs({world.device: rows})[world.device]
        store.insert_deliveries([(world.device, first + i, envelope) for i in range(rows)])
        return first

    first = await world.database.write_batch(job)
    async with world.database.read() as conn:
        queued = await MessageStore(conn).queued(world.device, after=0, limit=rows + 1)
    assert [q.seq for q in queued] == list(range(first, first + rows))
    assert {q.data for q in queued} == {b"data1"}
