"""Settings of `securemsg serve` and its commands that are not limits (auto_migrate, log_level,
keys_dir), each changed on the real server process or command and its effect checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from websockets.exceptions import InvalidStatus

from securemsg.storage.database import Database
from tests.support.server import ServerProcess, running_server
from tests.support.ws import authenticated, open_socket


async def _table_names(database_url: str) -> list[str]:
    database = Database.open(database_url)
    try:
        async with database.read() as conn:
            return sorted(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await database.close()


async def test_server_without_auto_migrate_leaves_the_schema_to_db_upgrade(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, auto_migrate=False) as server:
        assert await _table_names(sqlite_url) == []  # started, and created nothing
        server.cli("db", "upgrade")
        assert "accounts" in await _table_names(sqlite_url)
        server.create_account("carl", "client")
        assert server.login("carl")  # the same process serves the schema it did not make


async def test_log_level_warning_keeps_info_lines_out_of_the_server_log(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, log_level="warning") as server:
        server.create_account("carl", "client")
        ws, _ = await authenticated(server.ws_url, server.login("carl"))
        await ws.close()
        with pytest.raises(InvalidStatus):  # logged at info: "origin not allowed"
            await open_socket(server.ws_url, origin="https://evil.example")
    log = server.log()
    assert "INFO" not in log and "origin not allowed" not in log, log


def test_keys_dir_setting_names_the_audit_key_the_commands_use(
    sqlite_server: ServerProcess,
) -> None:
    served = httpx.get(sqlite_server.http_url + "/v1/audit/key", timeout=10).text
    assert served.count("\n") == 1

    def audit_key(keys_dir: Path) -> tuple[int, str, str]:
        env = sqlite_server.env | {"SECUREMSG_KEYS_DIR": str(keys_dir)}
        result = dataclasses.replace(sqlite_server, env=env).cli("audit", "key", check=False)
        return result.returncode, result.stdout, result.stderr

    assert audit_key(sqlite_server.data_dir / "keys") == (0, served, "")
    code, out, err = audit_key(sqlite_server.data_dir / "elsewhere")
    assert code != 0 and out == "" and "no audit key file" in err
