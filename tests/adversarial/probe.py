"""Is the server still serving? A sender and a receiver exchanging messages at a steady rate.

`delivery_latencies` sends `count` envelopes, one every `interval` seconds, from `sender` to
`receiver` and returns each one's send -> deliver time as the receiving peer saw it (both peers
live in this process, so one clock measures both ends). Envelopes are sealed before the clock
starts, so the numbers are the server's and the network's, not the test's crypto.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from tests.support.peer import Peer

_LIMITS = EnvelopeLimits()


async def delivery_latencies(
    sender: Peer,
    receiver: Peer,
    conversation: uuid.UUID,
    *,
    count: int,
    interval: float,
    timeout: float = 30,
) -> list[float]:
    """Send -> deliver seconds for each of `count` messages (both peers already attached)."""
    recipients = {receiver.device_id: receiver.device.encryption_key}
    envelopes = [sender.seal(conversation, recipients, f"probe {i}") for i in range(count)]
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []

    async def send() -> None:
        for raw in envelopes:
            sent_at[parse_envelope(raw, _LIMITS).message_id] = time.perf_counter()
            await sender.send_raw(raw)
            await asyncio.sleep(interval)

    async def accepted() -> None:
        for _ in envelopes:
            reply = await sender.next_of("accepted", "error", timeout=timeout)
            assert reply["type"] == "accepted", reply

    async def receive() -> None:
        while len(latencies) < count:
            frame = await receiver.next_of("deliver", timeout=timeout)
            arrived = time.perf_counter()
            message_id = parse_envelope(base64.b64decode(frame["envelope"]), _LIMITS).message_id
            if message_id in sent_at:
                latencies.append(arrived - sent_at[message_id])
            if len(latencies) % 10 == 0:  # cumulative, like a client that batches its acks
                await receiver.ack(frame["seq"])

    await asyncio.wait_for(asyncio.gather(send(), accepted(), receive()), timeout)
    return latencies
