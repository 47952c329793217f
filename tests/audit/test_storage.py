"""The audit log in SQL: fail-closed recording, append-only tables, integration and proofs."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy
from sqlalchemy import text

from securemsg.audit.checkpoint import open_checkpoint
from securemsg.audit.errors import CheckpointError
from securemsg.audit.events import Actor, AuditEvent, Subject
from securemsg.audit.integrator import Integrator
from securemsg.audit.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from securemsg.audit.note import NoteSigner
from securemsg.audit.scan import scan_database
from securemsg.crypto.signing import SigningKey
from securemsg.storage.accounts import AccountStore, Role
from securemsg.storage.audit import AuditLog, AuditWriteFailed, EventFilter
from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database
from securemsg.storage.errors import StorageError
from tests.audit.conftest import ORIGIN
from tests.audit.tamper import dialect_of, execute, fail_audit_inserts_sql

CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000c1c1")
OFFICER = uuid.UUID("00000000-0000-4000-8000-0000000000c0")


def event(number: int = 0, **changes: object) -> AuditEvent:
    base: dict[str, object] = {
        "action": "login",
        "outcome": "success",
        "actor": Actor(None, f"user{number}", "client"),
        "purpose": "authentication",
    }
    return AuditEvent(**{**base, **changes})  # type: ignore[arg-type]


async def record(database: Database, count: int, *, start_ms: int = 1_000) -> None:
    for number in range(count):
        async with database.write() as conn:
            await AuditLog(conn).record(event(number), now_ms=start_ms + number)


async def test_concurrent_recorders_get_dense_indexes_committed_in_order(
    database: Database,
) -> None:
    async def writer(worker: int) -> list[int]:
        got = []
        for number in range(5):
            async with database.write() as conn:
                got.extend(await AuditLog(conn).record_many([event(worker)] * 2, now_ms=number))
        return got

    results = await asyncio.gather(*(writer(w) for w in range(10)))
    indexes = sorted(i for result in results for i in result)
    assert indexes == list(range(100))
    for result in results:
        assert result == sorted(result)
    async with database.read() as conn:
        assert await AuditTree(conn).leaf_count() == 100


async def test_failed_audit_insert_rolls_back_the_callers_transaction(
    database: Database, database_url: str
) -> None:
    await execute(database_url, *fail_audit_inserts_sql(dialect_of(database_url)))
    with pytest.raises(AuditWriteFailed):
        async with database.write() as conn:
            await AccountStore(conn).create(
                username="carl", role=Role.CLIENT, password_hash="x", now_ms=1
            )
            await AuditLog(conn).record(event(), now_ms=1)
    async with database.read() as conn:
        assert await AccountStore(conn).find("carl") is None
        assert await AuditTree(conn).leaf_count() == 0


async def test_recording_in_a_read_transaction_is_refused(database: Database) -> None:
    with pytest.raises(AuditWriteFailed, match="write transaction"):
        async with database.read() as conn:
            await AuditLog(conn).record(event(), now_ms=1)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'failure'",
        "UPDATE audit_leaves SET leaf = leaf",
        "DELETE FROM audit_events",
        "DELETE FROM audit_leaves WHERE leaf_index = 0",
        "DELETE FROM audit_nodes",
        "UPDATE audit_checkpoints SET signed_ms = 0",
    ],
)
async def test_audit_tables_refuse_updates_and_deletes(
    database: Database, signer: NoteSigner, statement: str
) -> None:
    await record(database, 3)
    await Integrator(signers=[signer]).catch_up(database, now_ms=5)
    with pytest.raises(StorageError):
        async with database.write() as conn:
            await conn.execute(text(statement))


async def test_audit_tables_refuse_truncate_on_postgresql(database: Database) -> None:
    if database.dialect != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    with pytest.raises(StorageError):
        async with database.write() as conn:
            await conn.execute(text("TRUNCATE audit_leaves CASCADE"))


async def test_integrated_tree_serves_proofs_that_verify_against_signed_checkpoints(
    database: Database, signer: NoteSigner
) -> None:
    integrator = Integrator(signers=[signer], max_leaves=10)
    await integrator.catch_up(database, now_ms=1)  # the empty log's checkpoint
    await record(database, 37)
    latest = await integrator.catch_up(database, now_ms=2)
    assert latest is not None and latest.size == 37
    checkpoint = open_checkpoint(latest.note, signer.verifier, origin=ORIGIN)
    async with database.read() as conn:
        tree = AuditTree(conn)
        leaves = await tree.leaves(0, 100)
        sizes = [c.size for c in await tree.checkpoints_between(0, 100)]
        memory = MemoryTree()
        for _, leaf in leaves:
            memory.append(leaf)
        assert checkpoint.root == memory.root()
        assert sizes == [0, 10, 20, 30, 37]
        for index, leaf in leaves:
            proof = await tree.inclusion_proof(index, 37)
            verify_inclusion(leaf_hash(leaf), index, 37, proof, checkpoint.root)
        for size in sizes[1:]:
            proof = await tree.consistency_proof(size, 37)
            verify_consistency(size, 37, proof, memory.root(size), checkpoint.root)


async def test_integration_writes_nothing_without_new_leaves(
    database: Database, signer: NoteSigner
) -> None:
    integrator = Integrator(signers=[signer])
    await record(database, 3)
    assert (await integrator.catch_up(database, now_ms=1)) is not None
    assert (await integrator.catch_up(database, now_ms=2)) is None


async def test_racing_integrators_leave_one_consistent_tree(
    database: Database, signer: NoteSigner
) -> None:
    integrators = [Integrator(signers=[signer], max_leaves=3) for _ in range(4)]

    async def recorder() -> None:
        for number in range(40):
            async with database.write() as conn:
                await AuditLog(conn).record(event(number), now_ms=number)
            await asyncio.sleep(0)

    async def integrating(integrator: Integrator) -> None:
        for _ in range(30):
            await integrator.catch_up(database, now_ms=1)
            await asyncio.sleep(0)

    await asyncio.gather(recorder(), *(integrating(i) for i in integrators))
    await integrators[0].catch_up(database, now_ms=2)
    report = await scan_database(database, [signer.verifier])
    assert (report.size, report.checkpoint.size) == (40, 40)


async def test_integrator_refuses_to_extend_a_log_signed_by_another_key(
    database: Database, signer: NoteSigner
) -> None:
    await record(database, 2)
    await Integrator(signers=[signer]).catch_up(database, now_ms=1)
    await record(database, 1)
    stranger = NoteSigner(ORIGIN, SigningKey.from_seed(bytes(32)))
    with pytest.raises(CheckpointError, match="refusing to sign"):
        await Integrator(signers=[stranger]).catch_up(database, now_ms=2)
    with pytest.raises(CheckpointError, match="refusing to sign"):
        await Integrator(signers=[signer], origin="other.test/log").catch_up(database, now_ms=2)
    # A rotation adds the new key next to the old one: both sign, and the log goes on.
    rotated = await Integrator(signers=[signer, stranger]).catch_up(database, now_ms=3)
    assert rotated is not None
    open_checkpoint(rotated.note, stranger.verifier)
    open_checkpoint(rotated.note, signer.verifier)


async def test_queries_filter_by_each_field_and_page_with_a_cursor(database: Database) -> None:
    events = [
        event(1, subject=Subject(CLIENT, "carl")),
        event(2, action="login.failed", outcome="failure"),
        event(
            3,
            action="audit.query",
            actor=Actor(OFFICER, "cora", "compliance"),
            subject=Subject(CLIENT),
            purpose="subpoena 42",
        ),
        event(4, subject=Subject(CLIENT, "carl")),
        event(5, action="audit.export", actor=Actor(OFFICER, "cora", "compliance")),
    ]
    for number, item in enumerate(events):
        async with database.write() as conn:
            await AuditLog(conn).record(item, now_ms=1_000 * (number + 1))

    async def indexes(where: EventFilter, **kwargs: int) -> list[int]:
        async with database.read() as conn:
            found = await AuditLog(conn).page(where, limit=kwargs.pop("limit", 10), **kwargs)
        return [e.index for e in found]

    assert await indexes(EventFilter(subject=str(CLIENT))) == [0, 2, 3]
    assert await indexes(EventFilter(subject="carl")) == [0, 3]
    assert await indexes(EventFilter(actor="cora")) == [2, 4]
    assert await indexes(EventFilter(actor=str(OFFICER))) == [2, 4]
    assert await indexes(EventFilter(action="audit.*")) == [2, 4]
    assert await indexes(EventFilter(action="login")) == [0, 3]
    assert await indexes(EventFilter(outcome="failure")) == [1]
    assert await indexes(EventFilter(purpose="subpoena 42")) == [2]
    assert await indexes(EventFilter(since_ms=2_000, until_ms=4_000)) == [1, 2]
    assert await indexes(EventFilter(subject=str(CLIENT)), limit=2) == [0, 2]
    assert await indexes(EventFilter(subject=str(CLIENT)), after=2, limit=2) == [3]
    assert await indexes(EventFilter(), below=2) == [0, 1]
    async with database.read() as conn:
        stored = await AuditLog(conn).get(2)
    assert stored is not None and stored.fields["purpose"] == "subpoena 42"
    assert stored.fields["actor_id"] == str(OFFICER)


async def test_a_proof_is_one_select_of_at_most_two_log_n_stored_nodes(
    database: Database, signer: NoteSigner
) -> None:
    """Proofs come from stored hashes in O(log n) reads, never by rehashing the table."""
    size = 1000
    async with database.write() as conn:
        await AuditLog(conn).record_many([event(i) for i in range(size)], now_ms=1_000)
    await Integrator(signers=[signer]).catch_up(database, now_ms=5)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    async with database.read() as conn:
        tree = AuditTree(conn)
        checkpoint = await tree.latest_checkpoint()
        [(_, leaf)] = await tree.leaves(417, 1)
        engine = database.engine.sync_engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", seen)
        try:
            inclusion = await tree.inclusion_proof(417, size)
            consistency = await tree.consistency_proof(300, size)
        finally:
            sqlalchemy.event.remove(engine, "before_cursor_execute", seen)
    assert checkpoint is not None and checkpoint.size == size
    assert len(statements) == 2, statements  # one SELECT per proof
    assert all("audit_nodes" in s and "audit_leaves" not in s for s in statements)
    assert len(inclusion) <= size.bit_length() and len(consistency) <= 2 * size.bit_length()
    verify_inclusion(leaf_hash(leaf), 417, size, inclusion, checkpoint.root)
