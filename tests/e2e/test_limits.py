"""Each limit setting, exercised against the real server: refused with its documented code."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from securemsg.crypto.keys import DeviceKeys
from tests.support.peer import Peer, pair
from tests.support.server import PASSWORD, ServerProcess, running_server


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
