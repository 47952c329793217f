"""Nothing sent is lost or repeated, whatever happens to the server in between."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from securemsg.client import Anomaly, Client, Message, Undecryptable
from securemsg.storage.database import Database
from securemsg.storage.models import envelopes
from tests.client.conftest import OpenClient, Pair, make_pair, next_message, opener
from tests.client.relays import HostileRelay, TcpForwarder
from tests.support.server import running_server

MESSAGES = 1000


@pytest.fixture
async def forwarder(backend_pair: Pair) -> AsyncIterator[TcpForwarder]:
    relay = TcpForwarder(lambda: backend_pair.server.port)
    await relay.start()
    yield relay
    await relay.stop()


async def _send_all(client: Client, conversation: uuid.UUID, name: str) -> None:
    # Sends are started in order and may be in flight together; the SDK keeps their order.
    window = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        try:
            await client.send(conversation, f"{name} {i}")
        finally:
            window.release()

    tasks = []
    for i in range(MESSAGES):
        await window.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def _receive(
    client: Client, seen: list[str], problems: list[object], *, count: int = MESSAGES
) -> None:
    while len(seen) < count:
        event = await client.next_event()
        if isinstance(event, Message):
            seen.append(event.text)
        elif isinstance(event, Anomaly | Undecryptable):
            problems.append(event)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_thousand_messages_each_way_survive_a_sigterm_and_a_sigkill_restart(
    backend_pair: Pair, forwarder: TcpForwarder
) -> None:
    pair, open_client = backend_pair, opener(backend_pair)
    conversation = uuid.UUID(pair.conversation)
    fast = {"send_rate_per_second": 180.0, "send_burst": 180, "url": forwarder.http_url}
    async with open_client("tess", **fast) as tess, open_client("carl", **fast) as carl:
        at_tess: list[str] = []
        at_carl: list[str] = []
        problems: list[object] = []
        async with asyncio.timeout(55):
            work = asyncio.gather(
                _send_all(carl, conversation, "carl"),
                _send_all(tess, conversation, "tess"),
                _receive(tess, at_tess, problems),
                _receive(carl, at_carl, problems),
            )
            await _until(lambda: len(at_tess) > MESSAGES // 3)
            await asyncio.to_thread(pair.server.stop, signal.SIGTERM)
            # uvicorn re-raises SIGTERM once its graceful shutdown is done; -9 would mean the
            # server was still running 20 s later and was killed.
            assert pair.server.exit_code == -signal.SIGTERM
            await asyncio.to_thread(pair.server.start)
            await _until(lambda: len(at_tess) > 2 * MESSAGES // 3)
            await asyncio.to_thread(pair.server.kill)
            await asyncio.to_thread(pair.server.start)
            await work
            for client in (tess, carl):  # nothing more arrives after the last one
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        while not isinstance(await client.next_event(), Message):
                            pass
        assert at_tess == [f"carl {i}" for i in range(MESSAGES)]
        assert at_carl == [f"tess {i}" for i in range(MESSAGES)]
        assert problems == []
        assert carl.pending_sends == tess.pending_sends == 0
        assert carl.reconnects >= 2 and tess.reconnects >= 2


async def test_sends_refused_by_the_server_rate_limit_are_retried_in_order(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'securemsg.db'}"
    with running_server(tmp_path / "data", url, send_rate_per_second=20, send_burst=10) as server:
        pair = make_pair(server, tmp_path / "keys")
        open_client = opener(pair)
        conversation = uuid.UUID(pair.conversation)
        eager = {"send_rate_per_second": 1000.0, "send_burst": 1000}
        async with open_client("tess") as tess, open_client("carl", **eager) as carl:
            async with asyncio.timeout(30):
                await asyncio.gather(*(carl.send(conversation, f"m{i}") for i in range(60)))
                seen: list[str] = []
                problems: list[object] = []
                await _receive(tess, seen, problems, count=60)
            assert carl.reconnects > 0  # it was refused, paused and started over
            assert seen == [f"m{i}" for i in range(60)]
            assert problems == []


async def test_a_lost_accepted_reply_is_retried_with_the_same_message_id_and_stored_once(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"):
        pass
    relay = HostileRelay(pair.server.ws_url, lambda i, frame: [frame], cut_after_accepted=1)
    await relay.start()
    try:
        async with open_client("carl", websocket_url=relay.ws_url) as carl:
            sent = await carl.send(conversation, "stored before its reply was lost")
    finally:
        await relay.stop()
    assert relay.cuts_left == 0  # the first reply really was lost
    stored = await _stored_message_ids(pair)
    assert stored == [bytes.fromhex(sent.message_id)]  # one envelope, the retried one
    async with open_client("tess") as tess:
        message = await next_message(tess)
        assert message.message_id == sent.message_id


async def _stored_message_ids(pair: Pair) -> list[bytes]:
    database = Database.open(pair.server.database_url)
    try:
        async with database.read() as conn:
            rows = await conn.execute(select(envelopes.c.message_id).order_by(envelopes.c.id))
            return [bytes(row[0]) for row in rows]
    finally:
        await database.close()
