"""`securemsg audit ...` on a log the real server wrote: an untouched log verifies, and a log
edited in the database while the server was stopped fails with the first bad index."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from securemsg.storage.audit_tree import AuditTree
from securemsg.storage.database import Database
from tests.audit.tamper import dialect_of, drop_triggers_sql, execute, integrated
from tests.support.server import ServerProcess

EVENT_COLUMNS = (
    "time_ms, action, outcome, actor_id, actor_name, actor_role, subject_id, subject_name, "
    "resource, purpose, address, request_id, details, salt"
)
TAMPERING = {
    "edited": (["UPDATE audit_events SET outcome = 'success' WHERE leaf_index = 4"], 4),
    "deleted": (
        [
            "DELETE FROM audit_events WHERE leaf_index = 2",
            "DELETE FROM audit_leaves WHERE leaf_index = 2",
        ],
        2,
    ),
    "reordered": (
        [
            "CREATE TEMP TABLE tl AS SELECT * FROM audit_leaves WHERE leaf_index IN (1, 2)",
            "CREATE TEMP TABLE te AS SELECT * FROM audit_events WHERE leaf_index IN (1, 2)",
            "DELETE FROM audit_events WHERE leaf_index IN (1, 2)",
            "DELETE FROM audit_leaves WHERE leaf_index IN (1, 2)",
            "INSERT INTO audit_leaves (leaf_index, leaf) SELECT 3 - leaf_index, leaf FROM tl",
            f"INSERT INTO audit_events (leaf_index, {EVENT_COLUMNS}) "
            f"SELECT 3 - leaf_index, {EVENT_COLUMNS} FROM te",
        ],
        1,
    ),
    "truncated": (
        [
            "DELETE FROM audit_events WHERE leaf_index >= 4",
            "DELETE FROM audit_leaves WHERE leaf_index >= 4",
        ],
        4,
    ),
}


def audit(
    server: ServerProcess, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return server.cli("audit", *args, "--keys-dir", str(server.data_dir / "keys"), check=check)


@pytest.fixture
async def stopped(server: ServerProcess) -> ServerProcess:
    """A server that recorded 6 events, then stopped: 0 cora created, 1 carl created, 2 carl's
    login, 3 carl's sessions revoked, 4 a failed login on carl, 5 cora's login."""
    server.create_account("cora", "compliance")
    server.create_account("carl", "client")
    server.login("carl")
    server.cli("account", "revoke-sessions", "carl")
    httpx.post(server.http_url + "/v1/login", json={"username": "carl", "password": "x" * 9})
    server.login("cora")
    await integrated(server.database_url)
    server.stop()
    return server


async def test_untouched_log_verifies_and_queries_and_exports_work(
    stopped: ServerProcess,
) -> None:
    key = audit(stopped, "key").stdout.strip()
    assert key.count("+") >= 2
    result = audit(stopped, "verify", "--key", key)
    assert result.stdout.startswith("ok: 6 events verified"), result.stdout + result.stderr
    assert result.stderr.splitlines()[-1].startswith("verified 6 "), result.stderr  # progress
    assert audit(stopped, "verify", "--key", key, "--quiet").stderr == ""
    found = audit(stopped, "query", "--client", "carl", "--format", "ndjson").stdout
    assert [json.loads(line)["action"] for line in found.splitlines()] == [
        "account.created",
        "login",
        "account.sessions_revoked",
        "login.failed",
    ]
    table = audit(stopped, "query", "--action", "login.failed").stdout
    assert "login.failed" in table and "failure" in table
    export = stopped.data_dir / "export.csv"
    audit(stopped, "export", "--format", "csv", "-o", str(export), "--reason", "annual audit")
    verified = audit(stopped, "verify", "--export", str(export), "--key", key)
    assert "complete export of 6 events" in verified.stdout
    # The CLI's own query and export are in the log now, by the operator, with the reason.
    assert audit(stopped, "integrate").stdout.startswith("integrated")
    mine = audit(stopped, "query", "--action", "audit.*", "--format", "ndjson").stdout.splitlines()
    actions = [(json.loads(line)["action"], json.loads(line)["purpose"]) for line in mine]
    assert actions == [
        ("audit.query", "compliance review"),
        ("audit.query", "compliance review"),
        ("audit.export", "annual audit"),
    ]
    assert json.loads(mine[0])["actor_role"] == "operator"


@pytest.mark.parametrize("case", TAMPERING)
async def test_tampered_log_fails_verify_with_the_first_bad_index(
    stopped: ServerProcess, case: str
) -> None:
    statements, index = TAMPERING[case]
    dialect = dialect_of(stopped.database_url)
    await execute(stopped.database_url, *drop_triggers_sql(dialect), *statements)
    result = audit(stopped, "verify", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stderr and f"first bad index: {index}" in result.stderr


async def test_saved_checkpoint_catches_a_log_rolled_back_to_an_earlier_checkpoint(
    stopped: ServerProcess,
) -> None:
    saved = stopped.data_dir / "checkpoint.txt"
    audit(stopped, "verify", "--save-checkpoint", str(saved))
    assert saved.read_text().splitlines()[1] == "6"
    # An attacker rolls the log back to an earlier checkpoint, deleting everything after it.
    database = Database.open(stopped.database_url)
    try:
        async with database.read() as conn:
            sizes = [c.size for c in await AuditTree(conn).checkpoints_between(0, 6)]
    finally:
        await database.close()
    keep = max(sizes)
    await execute(
        stopped.database_url,
        *drop_triggers_sql(dialect_of(stopped.database_url)),
        f"DELETE FROM audit_checkpoints WHERE size > {keep}",
        f"DELETE FROM audit_nodes WHERE ((node_index + 1) << level) > {keep}",
        f"DELETE FROM audit_events WHERE leaf_index >= {keep}",
        f"DELETE FROM audit_leaves WHERE leaf_index >= {keep}",
    )
    assert audit(stopped, "verify", check=False).returncode == 0  # consistent on its own
    result = audit(stopped, "verify", "--checkpoint", str(saved), check=False)
    assert result.returncode == 1 and f"first bad index: {keep}" in result.stderr


async def test_events_recorded_while_the_server_is_down_are_signed_by_integrate(
    stopped: ServerProcess,
) -> None:
    stopped.create_account("tess", "therapist")
    assert "1 newer event(s) are checked but not yet signed" in audit(stopped, "verify").stdout
    assert audit(stopped, "integrate").stdout == "integrated: checkpoint at size 7\n"
    assert "not yet signed" not in audit(stopped, "verify").stdout


def test_cli_without_the_key_file_refuses_instead_of_creating_one(
    sqlite_server: ServerProcess,
) -> None:
    result = sqlite_server.cli(
        "audit", "integrate", "--keys-dir", str(sqlite_server.data_dir / "elsewhere"), check=False
    )
    assert result.returncode == 1 and "no audit key file" in result.stderr
    assert not (sqlite_server.data_dir / "elsewhere").exists()
