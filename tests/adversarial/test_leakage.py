"""Secrets never leak: marker plaintext, passwords and session tokens appear in no database file
(incl. the SQLite WAL and shared memory), no table (PostgreSQL), no server log line, no error
message and no response (the audit log and its export included), whatever path they took in.

A token may appear in exactly one place: the login response that issued it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from securemsg.protocol import frames
from tests.adversarial.actors import provision_now, serving
from tests.support.db import BACKENDS, snapshot
from tests.support.peer import Peer
from tests.support.server import ServerProcess
from tests.support.ws import open_socket, recv_json, until_closed

PLAINTEXT = "PLAINTEXT-MARKER-9c41e7 the patient said"
SECRET_PASSWORD = "PASSWORD-MARKER-51b0d2 correct horse"
WRONG_PASSWORD = "WRONGPW-MARKER-0f3a88 a guess"
FORGED_TOKEN = "TOKEN-MARKER-77aa01" + "A" * 24


def _forms(name: str, secret: str) -> list[bytes]:
    """A secret as text; a token also as the 32 bytes it decodes to."""
    if not name.startswith("token"):
        return [secret.encode()]
    return [secret.encode(), base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))]


def _scan(haystack: bytes, secrets: dict[str, str]) -> list[str]:
    return [n for n, secret in secrets.items() if any(f in haystack for f in _forms(n, secret))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_plaintext_passwords_and_tokens_appear_in_no_file_table_log_or_response(
    tmp_path: Path, backend: str
) -> None:
    with serving(tmp_path, backend, session_check_interval_seconds=0.2) as server:
        provision_now(server, {"carl": "client"}, password=SECRET_PASSWORD)
        (conversation,) = provision_now(
            server, {"tess": "therapist", "cora": "compliance"}, [("tess", "carl")]
        )
        responses: list[bytes] = []  # everything the server said, but token-issuing logins
        tokens: list[str] = []

        with httpx.Client(base_url=server.http_url, timeout=10) as client:

            def record(response: httpx.Response) -> httpx.Response:
                responses.append(response.content)
                return response

            issued = client.post(
                "/v1/login", json={"username": "carl", "password": SECRET_PASSWORD}
            )
            assert issued.status_code == 200
            tokens.append(issued.json()["token"])
            for username in ("carl", "nobody-by-that-name"):
                guess = {"username": username, "password": WRONG_PASSWORD}
                assert record(client.post("/v1/login", json=guess)).status_code == 401
            extra = {"username": "carl", "password": SECRET_PASSWORD, "x": 1}
            record(client.post("/v1/login", json=extra))
            too_long = {"username": "carl", "password": WRONG_PASSWORD * 40}
            assert record(client.post("/v1/login", json=too_long)).status_code == 400
            record(client.post("/v1/login", content=b'{"password": "' + SECRET_PASSWORD.encode()))
            record(client.get("/v1/me", headers={"Authorization": f"Bearer {FORGED_TOKEN}"}))
            record(client.get("/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"}))

        carl = Peer(server, "carl", password=SECRET_PASSWORD)
        carl.token = tokens[0]
        carl.account_id = uuid.UUID(issued.json()["account"])
        assert carl.register().status_code == 200
        tess = Peer(server, "tess").login()
        tokens.append(tess.token)
        assert tess.register().status_code == 200

        async def talk() -> None:
            await tess.connect()
            await carl.connect()
            to_carl = {carl.device_id: carl.device.encryption_key}
            for i in range(3):
                reply = await tess.send(tess.seal(conversation, to_carl, f"{PLAINTEXT} {i}"))
                responses.append(json.dumps(reply).encode())
                delivered = await carl.next_of("deliver")
                assert carl.open(delivered["envelope"], tess) == f"{PLAINTEXT} {i}"
            # Plaintext where an envelope belongs, and a forged token on a fresh socket.
            await tess.ws.send(  # type: ignore[union-attr]
                json.dumps({"type": "send", "envelope": frames.b64(PLAINTEXT.encode())})
            )
            responses.append(json.dumps(await tess.next_of("error")).encode())
            forged = await open_socket(server.ws_url)
            await forged.send(json.dumps({"type": "auth", "token": FORGED_TOKEN}))
            responses.append(json.dumps((await until_closed(forged))[1]).encode())
            header = await open_socket(server.ws_url, token=FORGED_TOKEN)
            responses.append(json.dumps((await until_closed(header))[1]).encode())
            ready = await open_socket(server.ws_url, token=carl.token)
            responses.append(json.dumps(await recv_json(ready)).encode())
            await ready.close()
            await tess.close()
            await carl.close()

        asyncio.run(talk())
        cora = Peer(server, "cora").login()
        tokens.append(cora.token)
        with httpx.Client(base_url=server.http_url, timeout=10, headers=cora.auth) as client:
            responses.append(client.get("/v1/audit/events", params={"limit": 1000}).content)
            responses.append(client.get("/v1/audit/export").content)
            responses.append(client.get("/v1/audit/export", params={"format": "csv"}).content)
            assert client.post("/v1/logout").status_code == 204

        secrets = {
            "plaintext": PLAINTEXT,
            "password": SECRET_PASSWORD,
            "wrong password": WRONG_PASSWORD,
            "token forged": FORGED_TOKEN,
            **{f"token {i}": token for i, token in enumerate(tokens)},
        }
        assert _stored_leaks(server, secrets) == {}  # while running: the WAL is still there
        leaks = {i: _scan(r, secrets) for i, r in enumerate(responses) if _scan(r, secrets)}
        assert leaks == {}, [responses[i][:300] for i in leaks]
        server.stop()
        assert _stored_leaks(server, secrets) == {}
        assert _scan(server.log().encode(), secrets) == []


def _stored_leaks(server: ServerProcess, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Secrets found in any file of the data directory and, on PostgreSQL, any table."""
    found = {
        str(path): _scan(path.read_bytes(), secrets)
        for path in server.data_dir.rglob("*")
        if path.is_file() and path.name != "server.log"
    }
    if not server.database_url.startswith("sqlite"):
        tables: Any = asyncio.run(snapshot(server.database_url, exclude=()))
        found["postgresql tables"] = _scan(repr(tables).encode(), secrets) + [
            name
            for name, secret in secrets.items()
            for rows in tables.values()
            for row in rows
            for value in row
            if isinstance(value, bytes) and any(f in value for f in _forms(name, secret))
        ]
    return {where: names for where, names in found.items() if names}
