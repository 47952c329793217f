"""Each limit setting, exercised against the real server: refused with its documented code."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from argon2 import Type, extract_parameters
from sqlalchemy import select

from securemsg.crypto.keys import DeviceKeys
from securemsg.storage.database import Database
from securemsg.storage.models import accounts
from tests.adversarial.rawsocket import CLOSE, PING, TEXT, handshake
from tests.support.peer import Peer, pair
from tests.support.server import PASSWORD, ServerProcess, run_blocking, running_server
from tests.support.ws import authenticated, recv_json


async def _login(
    client: httpx.AsyncClient, url: str, username: str, password: str, address: str
) -> int:
    response = await client.post(
        url + "/v1/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )
    return response.status_code


def test_wrong_password_burst_is_throttled_while_another_account_logs_in(
    tmp_path: Path, sqlite_url: str
) -> None:
    # Real Argon2id parameters here: the point is that the burst cannot starve other logins.
    with running_server(
        tmp_path, sqlite_url, argon2_time_cost=2, argon2_memory_kib=19456
    ) as server:
        server.create_account("alice", "client")
        server.create_account("bob", "client")

        async def run() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                attack = [
                    _login(client, server.http_url, "alice", f"guess{i}", "203.0.113.7")
                    for i in range(40)
                ]
                bob = _login(client, server.http_url, "bob", PASSWORD, "198.51.100.2")
                *codes, bob_code = await asyncio.gather(*attack, bob)
            assert bob_code == 200
            assert set(codes) <= {401, 429}
            assert codes.count(401) <= 5  # login_attempts_per_account: at most 5 hashes for alice
            assert codes.count(429) >= 35

        asyncio.run(run())


def test_logins_beyond_the_hashing_queue_get_503_at_once(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(
        tmp_path,
        sqlite_url,
        max_concurrent_hashes=1,
        max_queued_logins=0,
        argon2_time_cost=3,
        argon2_memory_kib=65536,
    ) as server:
        for i in range(6):
            server.create_account(f"user{i}", "client")

        async def run() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                codes = await asyncio.gather(
                    *[
                        _login(client, server.http_url, f"user{i}", PASSWORD, f"192.0.2.{i}")
                        for i in range(6)
                    ]
                )
            assert 200 in codes and 503 in codes

        asyncio.run(run())


def test_request_body_over_the_limit_is_refused_with_413(sqlite_server: ServerProcess) -> None:
    response = httpx.post(sqlite_server.http_url + "/v1/login", content=b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "frame_too_large"


def test_password_over_the_limit_is_a_bad_request(sqlite_server: ServerProcess) -> None:
    sqlite_server.create_account("carl", "client")
    response = httpx.post(
        sqlite_server.http_url + "/v1/login", json={"username": "carl", "password": "x" * 1025}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_sends_beyond_the_rate_limit_are_refused_and_not_stored(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path, sqlite_url, send_rate_per_second=1, send_burst=3) as server:
        tess, carl, conversation = pair(server)

        async def run() -> None:
            await tess.connect()
            to_carl = {carl.device_id: carl.device.encryption_key}
            for _ in range(5):
                await tess.send_raw(tess.seal(conversation, to_carl, "hi"))
            replies = [await tess.next_of("accepted", "error") for _ in range(5)]
            kinds = [r.get("code", r["type"]) for r in replies]
            assert kinds.count("accepted") == 3 and kinds.count("rate_limited") == 2
            await tess.close()

        asyncio.run(run())


def test_envelope_with_more_wraps_than_allowed_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, max_recipients=1) as server:
        tess, carl, conversation = pair(server)

        async def run() -> None:
            await tess.connect()
            extra = DeviceKeys.generate()
            reply = await tess.send(
                tess.seal(
                    conversation,
                    {
                        carl.device_id: carl.device.encryption_key,
                        uuid.uuid4(): extra.encryption_key,
                    },
                    "hi",
                )
            )
            assert reply["code"] == "too_many_recipients"
            await tess.close()

        asyncio.run(run())


def test_device_list_longer_than_allowed_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, max_devices_per_account=2) as server:
        server.create_account("carl", "client")
        carl = Peer(server, "carl").login()
        extra = [(uuid.uuid4(), DeviceKeys.generate()) for _ in range(2)]
        response = carl.register(extra=extra)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_device"
        assert carl.register(extra=extra[:1]).status_code == 200


async def test_client_that_never_answers_pings_is_closed_while_a_live_one_stays_open(
    tmp_path: Path, sqlite_url: str
) -> None:
    # uvicorn pings every ping_interval_seconds and allows as long again for the pong (1 s: the
    # live client must answer within it even on a loaded machine).
    with running_server(tmp_path / "data", sqlite_url, ping_interval_seconds=1.0) as server:
        server.create_account("carl", "client")
        token = server.login("carl")
        live, _ = await authenticated(server.ws_url, token)  # the library answers every ping
        silent = await handshake("127.0.0.1", server.port, Authorization=f"Bearer {token}")
        try:
            assert silent.status == 101
            opcode, ready = await silent.recv_frame()
            assert opcode == TEXT and json.loads(ready)["type"] == "ready"
            frames = []
            while True:  # read, never answer
                opcode, payload = await silent.recv_frame(timeout=10)
                frames.append(opcode)
                if opcode == CLOSE:
                    break
        finally:
            silent.close()
        assert frames[0] == PING and frames[-1] == CLOSE and set(frames) == {PING, CLOSE}
        assert struct.unpack("!H", payload[:2])[0] == 1011  # docs/protocol.md §3.5: keepalive
        # The live socket, pinged on the same schedule, answered and is still served.
        await asyncio.sleep(2.5)  # two more ping rounds
        await live.send(json.dumps({"type": "ping"}))
        assert await recv_json(live) == {"type": "pong"}
        await live.close()
        assert "Traceback" not in server.log()


def test_request_body_over_a_lowered_limit_is_refused_whether_declared_or_streamed(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, max_request_bytes=100) as server:
        server.create_account("carl", "client")
        login = server.http_url + "/v1/login"
        assert httpx.post(login, json={"username": "carl", "password": PASSWORD}).status_code == 200
        big = json.dumps({"username": "carl", "password": "x" * 120}).encode()

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies as it streams
            yield big[:50]
            yield big[50:]

        for refused in (httpx.post(login, content=big), httpx.post(login, content=chunked())):
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["code"] == "frame_too_large"


async def test_envelope_timestamp_outside_the_clock_skew_is_refused(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, clock_skew_seconds=10) as server:
        tess, carl, conversation = pair(server)
        await tess.connect()
        to_carl = {carl.device_id: carl.device.encryption_key}
        now_ms = int(time.time() * 1000)
        for offset_ms in (-60_000, 60_000):  # well inside the default skew of 300 s
            sealed = tess.seal(conversation, to_carl, "hi", timestamp_ms=now_ms + offset_ms)
            reply = await tess.send(sealed)
            assert reply["type"] == "error" and reply["code"] == "clock_skew", reply
        assert (await tess.send(tess.seal(conversation, to_carl, "hi")))["type"] == "accepted"
        await tess.close()
        await carl.connect()
        assert (await carl.next_of("caught_up"))["seq"] == 1  # only the accepted one was queued
        await carl.close()


async def test_history_and_backlog_are_read_in_pages_of_the_backlog_page_size(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, backlog_page_envelopes=2) as server:
        tess, carl, conversation = pair(server)
        texts = [f"message {i}" for i in range(5)]
        await tess.connect()
        to_carl = {carl.device_id: carl.device.encryption_key}
        for text in texts:
            assert (await tess.send(tess.seal(conversation, to_carl, text)))["type"] == "accepted"
        await tess.close()

        # GET .../history answers one page at a time; `after` walks through all of them.
        pages: list[list[dict[str, Any]]] = []
        after = 0
        while True:
            response = httpx.get(
                f"{server.http_url}/v1/conversations/{conversation}/history",
                params={"after": after},
                headers=tess.auth,
            )
            assert response.status_code == 200, response.text
            if not (page := response.json()["items"]):
                break
            pages.append(page)
            after = page[-1]["id"]
        assert [len(page) for page in pages] == [2, 2, 1]
        history = [item["envelope"] for page in pages for item in page]
        assert [carl.open(envelope, tess) for envelope in history] == texts

        # The offline device catches up across page boundaries: everything, in order, once.
        await carl.connect()
        delivered = [await carl.next_of("deliver") for _ in texts]
        assert [d["seq"] for d in delivered] == [1, 2, 3, 4, 5]
        assert [carl.open(d["envelope"], tess) for d in delivered] == texts
        assert await carl.next_of("caught_up", "deliver") == {"type": "caught_up", "seq": 5}
        await carl.close()


def test_argon2_settings_are_recorded_in_the_hashes_of_accounts_the_admin_path_creates(
    tmp_path: Path, sqlite_url: str
) -> None:
    argon2 = {"argon2_time_cost": 1, "argon2_memory_kib": 2048, "argon2_parallelism": 2}
    with running_server(tmp_path / "data", sqlite_url, **argon2) as server:
        # `securemsg account create` beside the server, under the same SECUREMSG_ARGON2_* settings
        server.env.update({"SECUREMSG_" + name.upper(): str(v) for name, v in argon2.items()})
        server.cli("account", "create", "--role", "client", "carl", stdin=PASSWORD + "\n")
        [(stored,)] = run_blocking(_rows(server.database_url, select(accounts.c.password_hash)))
        params = extract_parameters(stored)
        assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (
            Type.ID,
            1,
            2048,
            2,
        )
        assert server.login("carl")  # and the server verifies against it


async def _rows(database_url: str, query: Any) -> list[tuple[Any, ...]]:
    database = Database.open(database_url)
    try:
        async with database.read() as conn:
            return [tuple(row) for row in await conn.execute(query)]
    finally:
        await database.close()
