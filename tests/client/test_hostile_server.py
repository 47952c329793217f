"""A server that drops, duplicates, reorders or corrupts envelopes is caught by the receiving
SDK, and reported as an event."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from securemsg.client import (
    Anomaly,
    AnomalyKind,
    CaughtUp,
    Client,
    Event,
    Message,
    Undecryptable,
)
from tests.client.conftest import OpenClient, Pair
from tests.client.relays import HostileRelay, Policy, corrupt, drop, duplicate, swap_with_next

SENT = 5


async def _events_until_quiet(client: Client, quiet_seconds: float = 1.0) -> list[Event]:
    seen: list[Event] = []
    while True:
        try:
            async with asyncio.timeout(quiet_seconds):
                event = await client.next_event()
        except TimeoutError:
            return seen
        if not isinstance(event, CaughtUp):
            seen.append(event)


async def _through_relay(pair: Pair, open_client: OpenClient, policy: Policy) -> list[Event]:
    relay = HostileRelay(pair.server.ws_url, policy)
    await relay.start()
    try:
        conversation = uuid.UUID(pair.conversation)
        async with open_client("tess"):
            pass  # registers tess's device so carl can encrypt to it
        async with open_client("carl") as carl:
            for i in range(1, SENT + 1):
                await carl.send(conversation, f"message {i}")
        async with open_client("tess", websocket_url=relay.ws_url) as tess:
            return await _events_until_quiet(tess)
    finally:
        await relay.stop()


def _summary(events: list[Event]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, Message):
            out.append(("message", event.text))
        elif isinstance(event, Anomaly):
            out.append((event.kind.value, (event.first, event.last)))
        elif isinstance(event, Undecryptable):
            out.append(("undecryptable", event.reason))
        else:
            out.append((type(event).__name__, None))
    return out


async def test_dropped_envelope_is_reported_as_missing(pair: Pair, open_client: OpenClient) -> None:
    events = await _through_relay(pair, open_client, drop(3))
    assert _summary(events) == [
        ("message", "message 1"),
        ("message", "message 2"),
        ("missing", (3, 3)),
        ("message", "message 4"),
        ("message", "message 5"),
    ]


async def test_duplicated_envelope_is_reported_and_delivered_once(
    pair: Pair, open_client: OpenClient
) -> None:
    events = await _through_relay(pair, open_client, duplicate(2))
    assert _summary(events) == [
        ("message", "message 1"),
        ("message", "message 2"),
        ("duplicate", (2, 2)),
        ("message", "message 3"),
        ("message", "message 4"),
        ("message", "message 5"),
    ]


async def test_reordered_envelopes_are_reported_as_missing_then_late(
    pair: Pair, open_client: OpenClient
) -> None:
    events = await _through_relay(pair, open_client, swap_with_next(2))
    assert _summary(events) == [
        ("message", "message 1"),
        ("missing", (2, 2)),
        ("message", "message 3"),
        ("late", (2, 2)),
        ("message", "message 2"),
        ("message", "message 4"),
        ("message", "message 5"),
    ]
    anomalies = [e for e in events if isinstance(e, Anomaly)]
    assert {a.kind for a in anomalies} == {AnomalyKind.MISSING, AnomalyKind.LATE}
    assert all(a.sender_device == anomalies[0].sender_device for a in anomalies)


@pytest.mark.parametrize(("offset", "reason"), [(-1, "signature"), (-100, "signature")])
async def test_corrupted_envelope_is_reported_undecryptable_with_its_reason_and_not_shown(
    pair: Pair, open_client: OpenClient, offset: int, reason: str
) -> None:
    events = await _through_relay(pair, open_client, corrupt(3, offset))
    summary = _summary(events)
    assert [s for s in summary if s[0] == "message"] == [
        ("message", f"message {i}") for i in (1, 2, 4, 5)
    ]
    (bad,) = [e for e in events if isinstance(e, Undecryptable)]
    assert reason in bad.reason
    assert summary.index(("undecryptable", bad.reason)) == 2  # where message 3 was
    assert ("missing", (3, 3)) in summary  # the chain never saw message 3 open
