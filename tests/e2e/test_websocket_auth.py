"""Authentication on the WebSocket, against the real server process over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from securemsg.server.login import token_hash
from securemsg.storage.models import sessions
from tests.support.db import snapshot
from tests.support.server import ServerProcess, running_server
from tests.support.ws import authenticated, open_socket, recv_json, until_closed

MARKER = "MARKER-7f3a9c-do-not-log"


@pytest.fixture(scope="module")
def accounts(module_server: ServerProcess) -> ServerProcess:
    """A therapist and a client on a server shared by this module's tests (each compares the
    database before and after itself, and logs its own sessions in and out)."""
    module_server.create_account("tess", "therapist")
    module_server.create_account("carl", "client")
    module_server.create_conversation("tess", "carl")
    return module_server


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping"},
        {"type": "send", "envelope": base64.b64encode(MARKER.encode()).decode()},
        {"type": "attach", "device": "00000000-0000-0000-0000-000000000000", "signature": "QUJD"},
        {"type": "ack", "seq": 1},
    ],
    ids=["ping", "send", "attach", "ack"],
)
async def test_frame_before_auth_closes_with_auth_required_and_changes_nothing(
    accounts: ServerProcess, frame: dict[str, object]
) -> None:
    before = await snapshot(accounts.database_url)
    ws = await open_socket(accounts.ws_url)
    await ws.send(json.dumps(frame))
    code, seen = await until_closed(ws)
    assert code == 4402
    assert [f["code"] for f in seen] == ["auth_required"]
    assert await snapshot(accounts.database_url) == before
    assert MARKER not in accounts.log()


# Each carries the marker, so the log check below can tell the token was never written out.
INVALID_TOKENS = {
    "short": "not-a-token-" + MARKER,
    "over-length": MARKER + "x" * 300,
    "spaces": "a b c " + MARKER,
    "empty": "",
}


@pytest.mark.parametrize("token", list(INVALID_TOKENS.values()), ids=list(INVALID_TOKENS))
async def test_invalid_token_in_auth_frame_closes_with_auth_failed(
    accounts: ServerProcess, token: str
) -> None:
    before = await snapshot(accounts.database_url)
    ws = await open_socket(accounts.ws_url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    code, seen = await until_closed(ws)
    assert code == 4401
    assert seen[-1]["code"] == "auth_failed"
    assert await snapshot(accounts.database_url) == before
    assert MARKER not in accounts.log()


async def test_revoked_token_is_refused_on_socket_and_http(accounts: ServerProcess) -> None:
    token = accounts.login("carl")
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.post(accounts.http_url + "/v1/logout", headers=bearer).status_code == 204
    before = await snapshot(accounts.database_url)
    await _assert_token_refused(accounts, token)
    assert await snapshot(accounts.database_url) == before
    assert token not in accounts.log()


async def _assert_token_refused(server: ServerProcess, token: str) -> None:
    """`token` is refused in an auth frame, in the upgrade's Authorization header, and on HTTP."""
    ws = await open_socket(server.ws_url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    code, seen = await until_closed(ws)
    assert code == 4401 and [f["code"] for f in seen] == ["auth_failed"]
    ws = await open_socket(server.ws_url, token=token)
    code, seen = await until_closed(ws)
    assert code == 4401 and [f["code"] for f in seen] == ["auth_failed"]
    me = httpx.get(server.http_url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401 and me.json()["error"]["code"] == "auth_failed"


@pytest.mark.parametrize("expiry", ["session_lifetime_seconds", "session_idle_seconds"])
async def test_expired_session_token_is_refused_on_socket_and_http(
    tmp_path: Path, database_url: str, expiry: str
) -> None:
    with running_server(tmp_path / "data", database_url, **{expiry: 1}) as server:
        server.create_account("carl", "client")
        token = server.login("carl")
        await asyncio.sleep(1.5)  # past the session's lifetime, or its idle limit (never used)
        before = await snapshot(database_url)
        await _assert_token_refused(server, token)
        assert await snapshot(database_url) == before
        # The token names a real session, not revoked, made under the setting: time ended it.
        columns = sessions.c.keys()
        [session] = [
            dict(zip(columns, row, strict=True))
            for row in before["sessions"]
            if row[columns.index("token_hash")] == token_hash(token)
        ]
        assert session["revoked_ms"] is None
        lifetime_ms = session["expires_ms"] - session["created_ms"]
        assert lifetime_ms == (1000 if expiry == "session_lifetime_seconds" else 604_800_000)
        assert token not in server.log()


async def test_bearer_header_and_auth_frame_both_authenticate(accounts: ServerProcess) -> None:
    token = accounts.login("carl")
    ws = await open_socket(accounts.ws_url, token=token)
    ready = await recv_json(ws)
    assert ready["type"] == "ready" and ready["username"] == "carl" and ready["role"] == "client"
    await ws.close()
    ws, ready = await authenticated(accounts.ws_url, token)
    await ws.send(json.dumps({"type": "ping"}))
    assert await recv_json(ws) == {"type": "pong"}
    await ws.close()


async def test_cross_site_origin_is_refused_at_handshake(accounts: ServerProcess) -> None:
    token = accounts.login("carl")
    before = await snapshot(accounts.database_url)
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(accounts.ws_url, token=token, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    assert await snapshot(accounts.database_url) == before  # the session was not even touched
    log = accounts.log()
    assert "origin not allowed" in log and token not in log


def test_listed_origin_is_accepted(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, allowed_origins="https://app.example") as server:
        server.create_account("carl", "client")
        token = server.login("carl")

        async def check() -> None:
            ws = await open_socket(server.ws_url, token=token, origin="https://app.example")
            assert (await recv_json(ws))["type"] == "ready"
            await ws.close()
            with pytest.raises(InvalidStatus):
                await open_socket(server.ws_url, origin="https://other.example")

        asyncio.run(check())


BAD_FRAMES = [
    ("malformed-json", "{not json", 4400, "bad_json"),
    ("unknown-type", json.dumps({"type": "teleport"}), 4400, "unknown_type"),
    ("deep-nesting", '{"type":"ping","x":' + "[" * 5000 + "]" * 5000 + "}", 4400, "too_deep"),
    ("huge-number", '{"type":"ack","seq":' + "9" * 100_000 + "}", 4400, "bad_frame"),
    (
        "bad-base64",
        json.dumps({"type": "send", "envelope": "!!!not base64!!!"}),
        4400,
        "bad_base64",
    ),
    ("binary", b"\x00\x01\x02", 4400, "bad_frame"),
    ("not-an-object", "[1, 2, 3]", 4400, "bad_frame"),
    ("float", '{"type":"ack","seq":1.5}', 4400, "bad_frame"),
]


@pytest.mark.parametrize(
    ("name", "payload", "close", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES]
)
async def test_malformed_frame_after_auth_gets_documented_close_and_server_keeps_serving(
    accounts: ServerProcess, name: str, payload: str | bytes, close: int, code: str
) -> None:
    token = accounts.login("carl")
    ws, _ = await authenticated(accounts.ws_url, token)
    other, _ = await authenticated(accounts.ws_url, accounts.login("tess"))
    await ws.send(payload)
    got, seen = await until_closed(ws)
    assert got == close
    assert seen[-1]["code"] == code
    await other.send(json.dumps({"type": "ping"}))
    assert await recv_json(other) == {"type": "pong"}
    await other.close()
    assert "Traceback" not in accounts.log()


async def test_oversized_frame_closes_with_1009(accounts: ServerProcess) -> None:
    ws, _ = await authenticated(accounts.ws_url, accounts.login("carl"))
    await ws.send(json.dumps({"type": "ping", "pad": "x" * 200_000}))
    code, _ = await until_closed(ws)
    assert code == 1009
    assert "Traceback" not in accounts.log()


async def test_malformed_auth_frame_closes_before_anything_is_processed(
    accounts: ServerProcess,
) -> None:
    before = await snapshot(accounts.database_url)
    ws = await open_socket(accounts.ws_url)
    await ws.send('{"type":"auth","token":' + "[" * 3000 + "]" * 3000 + "}")
    code, seen = await until_closed(ws)
    assert code == 4400 and seen[-1]["code"] == "too_deep"
    assert await snapshot(accounts.database_url) == before


def test_socket_without_auth_frame_is_closed_at_the_deadline(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path, sqlite_url, auth_deadline_seconds=0.3) as server:

        async def check() -> None:
            ws = await open_socket(server.ws_url)
            code, seen = await until_closed(ws)
            assert code == 4408 and seen[-1]["code"] == "auth_timeout"

        asyncio.run(check())


def test_unauthenticated_sockets_per_address_are_capped(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, max_unauthenticated_sockets_per_address=2) as server:

        async def check() -> None:
            held = [await open_socket(server.ws_url) for _ in range(2)]
            third = await open_socket(server.ws_url)
            code, seen = await until_closed(third)
            assert code == 4429 and seen[-1]["code"] == "too_many_sockets"
            await held[0].close()
            await asyncio.sleep(0.2)  # let the server see the close
            fourth = await open_socket(server.ws_url)
            await fourth.send(json.dumps({"type": "ping"}))
            code, _ = await until_closed(fourth)
            assert code == 4402  # admitted (and then refused for skipping auth), not capped
            for ws in held[1:]:
                await ws.close()

        asyncio.run(check())


def test_sockets_per_account_are_capped(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, max_sockets_per_account=2) as server:
        server.create_account("carl", "client")
        token = server.login("carl")

        async def check() -> None:
            held = [(await authenticated(server.ws_url, token))[0] for _ in range(2)]
            ws = await open_socket(server.ws_url, token=token)
            code, seen = await until_closed(ws)
            assert code == 4429 and seen[-1]["code"] == "too_many_sockets"
            for h in held:
                await h.close()

        asyncio.run(check())


def test_disabling_an_account_closes_its_open_sockets_within_seconds(
    tmp_path: Path, database_url: str
) -> None:
    with running_server(tmp_path, database_url, session_check_interval_seconds=0.2) as server:
        server.create_account("carl", "client")
        token = server.login("carl")

        async def check() -> None:
            ws, _ = await authenticated(server.ws_url, token)
            await asyncio.to_thread(server.cli, "account", "disable", "carl")
            code, seen = await until_closed(ws, timeout=5)
            assert code == 4410 and seen[-1]["code"] == "session_ended"

        asyncio.run(check())
        response = httpx.post(
            server.http_url + "/v1/login",
            json={"username": "carl", "password": "correct horse battery"},
        )
        assert response.status_code == 401


def test_logout_closes_open_sockets_of_that_session(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, session_check_interval_seconds=0.2) as server:
        server.create_account("carl", "client")
        token = server.login("carl")

        async def check() -> None:
            ws, _ = await authenticated(server.ws_url, token)
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    server.http_url + "/v1/logout", headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 204
            code, _ = await until_closed(ws, timeout=5)
            assert code == 4410

        asyncio.run(check())


def test_idle_socket_is_closed_after_the_idle_timeout(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, idle_timeout_seconds=0.5) as server:
        server.create_account("carl", "client")
        token = server.login("carl")

        async def check() -> None:
            ws, _ = await authenticated(server.ws_url, token)
            code, seen = await until_closed(ws, timeout=5)
            assert code == 4000 and seen[-1]["code"] == "idle_timeout"

        asyncio.run(check())
