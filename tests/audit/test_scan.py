"""Checking a stored log: an untouched log passes; any edit, deletion, reordering or truncation
of audit rows (by someone who first dropped the triggers) is found at the first bad index."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from securemsg.audit.checkpoint import open_checkpoint, sign_checkpoint
from securemsg.audit.errors import CheckpointError, LogMismatch
from securemsg.audit.events import Actor, AuditEvent, expected_leaf
from securemsg.audit.integrator import Integrator
from securemsg.audit.merkle import MemoryTree, NodeID
from securemsg.audit.note import NoteSigner
from securemsg.audit.scan import scan_database
from securemsg.crypto.signing import SigningKey
from securemsg.storage.audit import AuditLog
from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database
from tests.audit.conftest import ORIGIN
from tests.audit.tamper import drop_triggers_sql

SIZE = 40
EVENT_COLUMNS = (
    "time_ms, action, outcome, actor_id, actor_name, actor_role, subject_id, subject_name, "
    "resource, purpose, address, request_id, details, salt"
)


@pytest.fixture
async def log(database: Database, signer: NoteSigner) -> Database:
    """40 events, integrated ten at a time: checkpoints at 10, 20, 30 and 40."""
    integrator = Integrator(signers=[signer], max_leaves=10)
    for number in range(SIZE):
        async with database.write() as conn:
            actor = Actor(None, f"user{number}", "client")
            await AuditLog(conn).record(
                AuditEvent("login", "success", actor=actor), now_ms=1_000 + number
            )
    await integrator.catch_up(database, now_ms=5_000)
    await sql(database, *drop_triggers_sql(database.dialect))
    return database


async def sql(database: Database, *statements: str) -> None:
    async with database.write() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def first_bad_index(database: Database, signer: NoteSigner, **kwargs: object) -> int | None:
    with pytest.raises(LogMismatch) as found:
        await scan_database(database, [signer.verifier], **kwargs)  # type: ignore[arg-type]
    return found.value.index


async def test_untouched_log_verifies_against_every_stored_checkpoint(
    log: Database, signer: NoteSigner
) -> None:
    report = await scan_database(log, [signer.verifier])
    assert (report.size, report.checkpoint.size, report.checkpoints_checked) == (40, 40, 5)
    assert open_checkpoint(report.note, signer.verifier).size == 40


async def test_newer_unsigned_events_are_checked_and_counted(
    log: Database, signer: NoteSigner
) -> None:
    async with log.write() as conn:
        await AuditLog(conn).record(AuditEvent("login", "success"), now_ms=9_000)
    report = await scan_database(log, [signer.verifier])
    assert (report.size, report.unsigned_leaves) == (41, 1)


TAMPERING = {
    "edited-event": (["UPDATE audit_events SET actor_name = 'nobody' WHERE leaf_index = 5"], 5),
    "edited-leaf": (
        [
            "UPDATE audit_leaves SET leaf = (SELECT leaf FROM audit_leaves WHERE leaf_index = 6) "
            "WHERE leaf_index = 5"
        ],
        5,
    ),
    "deleted-event": (["DELETE FROM audit_events WHERE leaf_index = 12"], 12),
    "deleted-leaf": (
        [
            "DELETE FROM audit_events WHERE leaf_index = 12",
            "DELETE FROM audit_leaves WHERE leaf_index = 12",
        ],
        12,
    ),
    "reordered": (
        [
            "CREATE TEMP TABLE tl AS SELECT * FROM audit_leaves WHERE leaf_index IN (7, 8)",
            "CREATE TEMP TABLE te AS SELECT * FROM audit_events WHERE leaf_index IN (7, 8)",
            "DELETE FROM audit_events WHERE leaf_index IN (7, 8)",
            "DELETE FROM audit_leaves WHERE leaf_index IN (7, 8)",
            "INSERT INTO audit_leaves (leaf_index, leaf) SELECT 15 - leaf_index, leaf FROM tl",
            f"INSERT INTO audit_events (leaf_index, {EVENT_COLUMNS}) "
            f"SELECT 15 - leaf_index, {EVENT_COLUMNS} FROM te",
        ],
        7,
    ),
    "truncated": (
        [
            "DELETE FROM audit_events WHERE leaf_index >= 30",
            "DELETE FROM audit_leaves WHERE leaf_index >= 30",
        ],
        30,
    ),
    "edited-node": (
        [
            "UPDATE audit_nodes SET hash = (SELECT hash FROM audit_nodes "
            "WHERE level = 2 AND node_index = 0) WHERE level = 2 AND node_index = 1"
        ],
        4,
    ),
    "checkpoints-deleted": (["DELETE FROM audit_checkpoints WHERE size > 20"], 20),
}


@pytest.mark.parametrize("case", TAMPERING)
async def test_tampering_is_reported_at_the_first_bad_index(
    log: Database, signer: NoteSigner, case: str
) -> None:
    statements, index = TAMPERING[case]
    await sql(log, *statements)
    assert await first_bad_index(log, signer) == index


async def test_truncation_to_an_earlier_checkpoint_is_caught_by_a_saved_checkpoint(
    log: Database, signer: NoteSigner
) -> None:
    saved = (await scan_database(log, [signer.verifier])).checkpoint
    await sql(
        log,
        "DELETE FROM audit_checkpoints WHERE size > 20",
        "DELETE FROM audit_nodes WHERE ((node_index + 1) << level) > 20",
        "DELETE FROM audit_events WHERE leaf_index >= 20",
        "DELETE FROM audit_leaves WHERE leaf_index >= 20",
    )
    report = await scan_database(log, [signer.verifier])  # consistent on its own...
    assert report.size == 20
    assert await first_bad_index(log, signer, saved=saved) == 20  # ...but not with what we saw


async def test_rewritten_history_with_recomputed_nodes_is_pinned_between_checkpoints(
    log: Database, signer: NoteSigner
) -> None:
    """An attacker who edits event 25, recomputes its commitment (the salt is in the table),
    its leaf and every node, but can't sign: the checkpoint at 30 no longer matches, the one
    at 20 still does, so the first bad index is reported as 20 (somewhere in [20, 30))."""
    async with log.read() as conn:
        edited = await AuditLog(conn).get(25)
        leaves = [leaf for _, leaf in await AuditTree(conn).leaves(0, SIZE)]
    assert edited is not None
    fields = {**edited.fields, "outcome": "failure"}
    leaves[25] = expected_leaf(fields, edited.salt)
    memory = MemoryTree()
    for leaf in leaves:
        memory.append(leaf)
    async with log.write() as conn:
        await conn.execute(
            text("UPDATE audit_leaves SET leaf = :leaf WHERE leaf_index = 25"), {"leaf": leaves[25]}
        )
        await conn.execute(
            text("UPDATE audit_events SET outcome = 'failure' WHERE leaf_index = 25")
        )
        rows = list(await conn.execute(text("SELECT level, node_index FROM audit_nodes")))
        for level, index in rows:
            await conn.execute(
                text("UPDATE audit_nodes SET hash = :h WHERE level = :l AND node_index = :i"),
                {"h": memory.read_nodes([NodeID(level, index)])[0], "l": level, "i": index},
            )
    assert await first_bad_index(log, signer) == 20


async def test_checkpoint_not_signed_by_the_trusted_key_is_refused(
    log: Database, signer: NoteSigner
) -> None:
    forger = NoteSigner(ORIGIN, SigningKey.from_seed(bytes(32)))
    async with log.read() as conn:
        latest = await AuditTree(conn).latest_checkpoint()
    assert latest is not None
    forged = sign_checkpoint(forger, ORIGIN, latest.size, latest.root)
    async with log.write() as conn:
        await conn.execute(
            text("UPDATE audit_checkpoints SET note = :note WHERE size = :size"),
            {"note": forged, "size": latest.size},
        )
    with pytest.raises(CheckpointError):
        await scan_database(log, [signer.verifier])
