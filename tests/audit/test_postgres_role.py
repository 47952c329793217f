"""docs/audit.md's PostgreSQL set-up, run as written: the server works as the application role it
describes, and that role cannot change, remove or unprotect a single audit row."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
import pytest

from securemsg.storage import migrate
from securemsg.storage.database import Database
from tests.audit.tamper import integrated
from tests.support.server import provision, running_server

AUDIT_DOC = Path(__file__).parents[2] / "docs" / "audit.md"
# Each audit table with one of its columns (for an UPDATE that would change nothing).
AUDIT_TABLES = {
    "audit_leaves": "leaf",
    "audit_events": "time_ms",
    "audit_nodes": "hash",
    "audit_checkpoints": "note",
}


def documented_sql(role: str) -> list[str]:
    """The statements of the SQL block under "Database-level protection", for `role`."""
    section = AUDIT_DOC.read_text().split("### Database-level protection", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    text = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    text = text.replace("securemsg_app", role).replace("'…'", "'not-used-with-trust-auth'")
    return [s.strip() for s in text.split(";") if s.strip()]


def as_role(url: str, role: str) -> str:
    return re.sub(r"//[^@/]+@", f"//{role}@", url)


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.postgres
async def test_the_documented_application_role_runs_the_server_and_cannot_touch_audit_rows(
    postgres_url: str, tmp_path: Path
) -> None:
    owner = Database.open(postgres_url)
    await migrate.upgrade(owner)  # "as the owner of the schema, after securemsg db upgrade"
    await owner.close()
    role = f"securemsg_app_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(plain(postgres_url))
    try:
        for statement in documented_sql(role):
            await conn.execute(statement)
    finally:
        await conn.close()
    app_url = as_role(postgres_url, role)
    try:
        with running_server(tmp_path / "data", app_url, auto_migrate="no") as server:
            await provision(app_url, {"carl": "client"})
            assert server.login("carl")  # sessions written, the login audited, as the role
            assert await integrated(postgres_url) >= 2  # the integrator signs as the role too
        app = await asyncpg.connect(plain(app_url))
        try:
            for table, column in AUDIT_TABLES.items():
                for statement in (
                    f"UPDATE {table} SET {column} = {column}",
                    f"DELETE FROM {table}",
                    f"TRUNCATE {table}",
                    f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                    f"DROP TABLE {table}",
                ):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await app.execute(statement)
            assert await app.fetchval("SELECT count(*) FROM audit_events") >= 2
        finally:
            await app.close()
    finally:
        conn = await asyncpg.connect(plain(postgres_url))
        try:
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
        finally:
            await conn.close()
