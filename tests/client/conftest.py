"""Fixtures for SDK tests: accounts on the real server, and clients with cheap keystores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from securemsg.client import Client, ClientOptions, KdfParams, Message
from tests.support.server import PASSWORD, ServerProcess

FAST_KDF = KdfParams(time_cost=1, memory_kib=1024, parallelism=1)
PASSPHRASE = "keystore passphrase"


async def next_message(client: Client, timeout: float = 10) -> Message:
    """The next `Message` event, skipping any other kind."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event()
            if isinstance(event, Message):
                return event


def fast_options(**overrides: object) -> ClientOptions:
    values: dict[str, object] = {
        "kdf": FAST_KDF,
        "reconnect_initial_seconds": 0.05,
        "reconnect_max_seconds": 0.5,
        "timeout_seconds": 10.0,
    }
    values.update(overrides)
    return ClientOptions(**values)  # type: ignore[arg-type]


@dataclass
class Pair:
    """A therapist and a client sharing one conversation on the real server."""

    server: ServerProcess
    conversation: str
    keys_dir: Path

    def keystore(self, name: str) -> Path:
        return self.keys_dir / f"{name}.keys"


def make_pair(server: ServerProcess, keys: Path) -> Pair:
    server.create_account("tess", "therapist")
    server.create_account("carl", "client")
    conversation = server.create_conversation("tess", "carl")
    keys.mkdir()
    return Pair(server, conversation, keys)


@pytest.fixture
def pair(sqlite_server: ServerProcess, tmp_path: Path) -> Pair:
    """Tess (therapist) and Carl (client) on the real server over SQLite."""
    return make_pair(sqlite_server, tmp_path / "keys")


@pytest.fixture
def backend_pair(server: ServerProcess, tmp_path: Path) -> Pair:
    """The same pair on every configured database backend."""
    return make_pair(server, tmp_path / "keys")


OpenClient = Callable[..., AbstractAsyncContextManager[Client]]


def opener(pair: Pair) -> OpenClient:
    @asynccontextmanager
    async def opened(
        name: str,
        *,
        url: str | None = None,
        login: bool = True,
        keystore: str | None = None,
        **options: object,
    ) -> AsyncIterator[Client]:
        async with Client.connect(
            url or pair.server.http_url,
            keystore=pair.keystore(keystore or name),
            passphrase=PASSPHRASE,
            options=fast_options(**options),
        ) as client:
            if login:
                await client.login(name, PASSWORD)
            yield client

    return opened


@pytest.fixture
def open_client(pair: Pair) -> OpenClient:
    return opener(pair)
