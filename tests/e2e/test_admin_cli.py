"""The operator's commands (`account create`, `conversation create`, `account revoke-sessions`)
as an operator runs them, beside the real server (other tests provision through
the same `AdminService` in-process, to save a process start per account)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import httpx

from tests.support.db import snapshot
from tests.support.server import PASSWORD, ServerProcess, running_server
from tests.support.ws import authenticated, recv_json, until_closed

CREATED = re.compile(r"created (\w+) (\S+) \(([0-9a-f-]{36})\)")


async def test_account_and_conversation_create_print_ids_and_the_account_can_log_in(
    server: ServerProcess,
) -> None:
    made = {}
    for username, role in (("tess", "therapist"), ("carl", "client")):
        out = server.cli("account", "create", "--role", role, username, stdin=PASSWORD + "\n")
        match = CREATED.fullmatch(out.stdout.strip())
        assert match is not None, out.stdout
        assert match.group(1, 2) == (role, username)
        made[username] = uuid.UUID(match.group(3))
    conversation = server.cli("conversation", "create", "tess", "carl").stdout.strip()
    assert re.fullmatch(r"created conversation [0-9a-f-]{36}", conversation)
    assert server.login("carl")
    assert PASSWORD not in server.log()


async def test_bad_admin_commands_exit_2_with_a_reason_and_change_nothing(
    sqlite_server: ServerProcess,
) -> None:
    server = sqlite_server  # the checks are AdminService's, run on both backends in-process
    server.create_account("tess", "therapist")
    server.create_account("carl", "client")
    before = await snapshot(server.database_url)
    refused = {
        "existing username": (("account", "create", "--role", "client", "carl"), PASSWORD),
        "bad username": (("account", "create", "--role", "client", "-x y"), PASSWORD),
        "empty password": (("account", "create", "--role", "client", "cleo"), ""),
        "client as therapist": (("conversation", "create", "carl", "tess"), None),
        "unknown client": (("conversation", "create", "tess", "nobody"), None),
    }
    for case, (args, password) in refused.items():
        stdin = None if password is None else password + "\n"
        result = server.cli(*args, stdin=stdin, check=False)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert result.stderr.startswith("securemsg: error: "), (case, result.stderr)
        assert "Traceback" not in result.stderr
    assert await snapshot(server.database_url) == before


def test_a_password_on_the_command_line_is_refused(sqlite_server: ServerProcess) -> None:
    result = sqlite_server.cli(
        "account", "create", "--role", "client", "--password", PASSWORD, "cleo", check=False
    )
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr or "--password" in result.stderr


def test_revoke_sessions_closes_the_accounts_open_sockets_and_its_tokens_stop_working(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path, sqlite_url, session_check_interval_seconds=0.2) as server:
        server.create_account("carl", "client")
        server.create_account("tess", "therapist")
        token, other = server.login("carl"), server.login("tess")

        async def check() -> None:
            ws, _ = await authenticated(server.ws_url, token)
            bystander, _ = await authenticated(server.ws_url, other)
            out = await asyncio.to_thread(server.cli, "account", "revoke-sessions", "carl")
            assert out.stdout.strip() == "revoked 1 session(s) of carl"
            code, seen = await until_closed(ws, timeout=5)
            assert code == 4410 and seen[-1]["code"] == "session_ended"
            await bystander.send(json.dumps({"type": "ping"}))
            assert await recv_json(bystander) == {"type": "pong"}
            await bystander.close()

        asyncio.run(check())
        me = httpx.get(server.http_url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
        assert server.login("carl")  # the password still works: only the sessions ended
        assert token not in server.log()
