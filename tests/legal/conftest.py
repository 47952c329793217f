"""Fixtures for legal requests and holds: the real server with two compliance officers (cora and
cole), a therapist and a client sharing a conversation, and HTTP helpers for the officers."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from securemsg.audit.note import NoteVerifier
from securemsg.storage import migrate
from securemsg.storage.database import Database
from tests.support.peer import Peer
from tests.support.server import ServerProcess, provision

MARKER = "PLAINTEXT-MARKER-legal-7f3a"
# Plain HTTP to 127.0.0.1: an empty TLS context spares each client loading CA certificates.
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@dataclasses.dataclass
class Account:
    """An account's token and HTTP calls against the real server."""

    server: ServerProcess
    username: str
    token: str = ""

    def __post_init__(self) -> None:
        if not self.token:
            self.token = self.server.login(self.username)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        url = self.server.http_url + path
        return httpx.get(url, params=params, headers=self.headers, timeout=30, verify=PLAIN_HTTP)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        url = self.server.http_url + path
        return httpx.post(url, json=body, headers=self.headers, timeout=30, verify=PLAIN_HTTP)

    def ok(self, response: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.text
        value = response.json()
        assert isinstance(value, dict)
        return value

    def file(self, scope: dict[str, Any], **fields: Any) -> dict[str, Any]:
        body = {
            "authority": "District Court of Example",
            "reference": "case 2026-CV-0042",
            "legal_basis": "court order under 18 U.S.C. 2703(d)",
            "scope": scope,
            **fields,
        }
        return self.ok(self.post("/v1/legal/requests", body), 201)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.ok(self.get("/v1/audit/events", **params))["events"])


@dataclasses.dataclass
class World:
    server: ServerProcess
    cora: Account
    cole: Account
    tess: Peer
    carl: Peer
    conversation: uuid.UUID

    async def send(self, *texts: str) -> None:
        """Tess sends each text to Carl through the real server (Carl stays offline)."""
        await self.tess.connect()
        for text in texts:
            sealed = self.tess.seal(
                self.conversation, {self.carl.device_id: self.carl.device.encryption_key}, text
            )
            reply = await self.tess.send(sealed)
            assert reply["type"] == "accepted", reply
        await self.tess.close()

    def exported(self, scope: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """A request filed by cora, approved by cole and exported by cora."""
        filed = self.cora.file(scope or {"conversation": str(self.conversation)}, **fields)
        path = f"/v1/legal/requests/{filed['id']}"
        self.cole.ok(self.cole.post(path + "/approve", {"note": "order verified by phone"}))
        return self.cora.ok(self.cora.post(path + "/export"))

    def verifier(self) -> NoteVerifier:
        response = httpx.get(self.server.http_url + "/v1/audit/key", timeout=10)
        return NoteVerifier.parse(response.text.splitlines()[0])


async def populate(server: ServerProcess) -> World:
    """Cora and cole (compliance); tess and carl, logged in with a registered device each, in
    one conversation."""
    roles = {"cora": "compliance", "cole": "compliance", "tess": "therapist", "carl": "client"}
    _, [conversation] = await provision(server.database_url, roles, [("tess", "carl")])
    tess, carl = Peer(server, "tess").login(), Peer(server, "carl").login()
    for peer in (tess, carl):
        assert peer.register().status_code == 200
    return World(server, Account(server, "cora"), Account(server, "cole"), tess, carl, conversation)


@pytest.fixture
def world(server: ServerProcess) -> World:
    """On every configured database backend."""
    return asyncio.run(populate(server))


@pytest.fixture
def sqlite_world(sqlite_server: ServerProcess) -> World:
    """On SQLite only, for behaviour that does not depend on the database."""
    return asyncio.run(populate(sqlite_server))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated real database (each backend), for service-level tests."""
    db = Database.open(database_url)
    await migrate.upgrade(db)
    try:
        yield db
    finally:
        await db.close()
