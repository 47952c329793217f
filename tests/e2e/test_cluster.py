"""Several server processes on one PostgreSQL database, fanned out through Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from securemsg.crypto.keys import DeviceKeys
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from tests.support.peer import Peer, pair
from tests.support.server import ServerProcess, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@contextlib.contextmanager
def two_nodes(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes sharing one database and one Redis."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_server(tmp_path / "a", postgres_url, redis_url=redis_url) as node_a,
        running_server(tmp_path / "b", postgres_url, redis_url=redis_url) as node_b,
    ):
        yield node_a, node_b


def test_message_sent_to_one_node_is_delivered_live_by_another(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    with two_nodes(tmp_path, postgres_url, redis_url) as (node_a, node_b):
        tess, carl, conversation = pair(node_a)
        carl.server = node_b  # carl's socket lives on the other node

        async def run() -> None:
            await tess.connect()
            await carl.connect()
            await carl.next_of("caught_up")
            to_carl = {carl.device_id: carl.device.encryption_key}
            for i in range(20):
                reply = await tess.send(tess.seal(conversation, to_carl, f"across nodes {i}"))
                assert reply["type"] == "accepted"
            got = [
                carl.open((await carl.next_of("deliver", timeout=5))["envelope"], tess)
                for _ in range(20)
            ]
            assert got == [f"across nodes {i}" for i in range(20)]
            await tess.close()
            await carl.close()

        asyncio.run(run())


def test_one_device_queue_written_by_two_nodes_at_once_stays_gapless_and_ordered(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    with two_nodes(tmp_path, postgres_url, redis_url) as (node_a, node_b):
        tess, carl, conversation = pair(node_a)
        # A second device of Tess's, on node B: both of her devices write to Carl's queue at once.
        tess_b = Peer(node_b, "tess", identity=tess.identity, device=DeviceKeys.generate()).login()
        assert (
            tess.register(version=2, extra=[(tess_b.device_id, tess_b.device)]).status_code == 200
        )

        async def burst(peer: Peer, n: int) -> list[dict[str, object]]:
            to_carl = {carl.device_id: carl.device.encryption_key}
            for i in range(n):
                await peer.send_raw(peer.seal(conversation, to_carl, f"{peer.device_id} {i}"))
            return [await peer.next_of("accepted", "error") for _ in range(n)]

        async def run() -> None:
            await tess.connect()
            await tess_b.connect()
            a, b = await asyncio.gather(burst(tess, 100), burst(tess_b, 100))
            assert all(r["type"] == "accepted" for r in a + b)
            await carl.connect()
            frames = [await carl.next_of("deliver") for _ in range(200)]
            assert [f["seq"] for f in frames] == list(range(1, 201))
            senders = {tess.device_id.bytes: tess, tess_b.device_id.bytes: tess_b}
            texts = []
            for frame in frames:
                raw = base64.b64decode(str(frame["envelope"]))
                sender = senders[parse_envelope(raw, EnvelopeLimits()).sender_device]
                texts.append(carl.open(str(frame["envelope"]), sender))
            for sender in (tess, tess_b):
                mine = [t for t in texts if t.startswith(str(sender.device_id))]
                assert mine == [f"{sender.device_id} {i}" for i in range(100)]
            for peer in (tess, tess_b, carl):
                await peer.close()

        asyncio.run(run())
