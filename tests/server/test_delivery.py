"""The delivery service without Starlette: checks, group commit, queues and acks."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest

from securemsg.clock import FakeClock
from securemsg.crypto.envelope import seal_envelope
from securemsg.crypto.keys import DeviceKeys
from securemsg.protocol.errors import EnvelopeError, ErrorCode
from securemsg.server.delivery import Accepted, Delivery, Push
from securemsg.server.signatures import Item
from securemsg.settings import Settings
from securemsg.storage.accounts import AccountStore, Role
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from securemsg.storage.devices import Device, DeviceStore
from tests.support.signatures import workers_up


@dataclass
class Member:
    account: uuid.UUID
    device: Device
    keys: DeviceKeys


async def _member(database: Database, name: str, role: Role, now_ms: int) -> Member:
    keys = DeviceKeys.generate()
    async with database.write() as conn:
        account = await AccountStore(conn).create(
            username=name, role=role, password_hash="x", now_ms=now_ms
        )
        device_id = uuid.uuid4()
        await DeviceStore(conn).add(
            device_id=device_id,
            account_id=account.id,
            signing_key=keys.signing_key,
            encryption_key=keys.encryption_key,
            certificate=b"c",
            now_ms=now_ms,
        )
        device = await DeviceStore(conn).get(device_id)
    assert device is not None
    return Member(account.id, device, keys)


@dataclass
class World:
    delivery: Delivery
    pushes: list[Push]
    tess: Member
    carl: Member
    olga: Member
    conversation: uuid.UUID
    clock: FakeClock

    def seal(
        self,
        author: Member,
        text: str = "hi",
        *,
        to: Sequence[Member] | None = None,
        message_id: bytes | None = None,
        **overrides: object,
    ) -> bytes:
        recipients = {m.device.id.bytes: m.keys.encryption_key for m in (to or [self.carl])}
        sender = author
        fields: dict[str, object] = dict(
            sender=sender.keys,
            sender_account=sender.account.bytes,
            sender_device=sender.device.id.bytes,
            conversation_id=self.conversation.bytes,
            message_id=message_id or os.urandom(16),
            timestamp_ms=self.clock.now_ms(),
            recipients=recipients,
            plaintext=text.encode(),
        )
        fields.update(overrides)
        return seal_envelope(**fields)  # type: ignore[arg-type]

    async def submit(self, sender: Member, raw: bytes) -> Accepted:
        return await self.delivery.submit(raw, account_id=sender.account, device=sender.device)


async def new_world(
    database: Database,
    clock: FakeClock,
    settings: Settings,
    on_committed: Callable[[Sequence[Push]], None] | None = None,
) -> World:
    """tess and carl in a conversation, olga outside it; the delivery service not started.
    Committed pushes go to `on_committed` (default: the world's `pushes`)."""
    pushes: list[Push] = []
    delivery = Delivery(database, settings, clock, on_committed or pushes.extend)
    now = clock.now_ms()
    tess = await _member(database, "tess", Role.THERAPIST, now)
    carl = await _member(database, "carl", Role.CLIENT, now)
    olga = await _member(database, "olga", Role.CLIENT, now)
    async with database.write() as conn:
        conversation = await ConversationStore(conn).create(
            therapist_id=tess.account, client_id=carl.account, now_ms=now
        )
    return World(delivery, pushes, tess, carl, olga, conversation, clock)


@pytest.fixture
async def world(database: Database, clock: FakeClock) -> AsyncIterator[World]:
    made = await new_world(database, clock, Settings())
    made.delivery.start()
    yield made
    await made.delivery.stop()


async def test_accepted_send_is_queued_for_each_recipient_device(world: World) -> None:
    accepted = await world.submit(world.tess, world.seal(world.tess))
    assert accepted.duplicate is False
    assert [(d, s) for d, s, _, _ in world.pushes] == [(world.carl.device.id, 1)]
    queue = await world.delivery.queue(world.carl.device.id, after=0, limit=10)
    assert [q.seq for q in queue.deliveries] == [1]


async def test_bad_signature_is_refused_and_nothing_is_queued(world: World) -> None:
    raw = bytearray(world.seal(world.tess))
    raw[-1] ^= 1
    with pytest.raises(EnvelopeError) as caught:
        await world.submit(world.tess, bytes(raw))
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    assert world.pushes == []


async def test_signature_by_another_device_key_is_refused(world: World) -> None:
    raw = world.seal(world.tess, sender=world.carl.keys)
    with pytest.raises(EnvelopeError) as caught:
        await world.submit(world.tess, raw)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("non-member", ErrorCode.NOT_MEMBER),
        ("stranger", ErrorCode.BAD_RECIPIENTS),
        ("skew", ErrorCode.CLOCK_SKEW),
        ("forged", ErrorCode.WRONG_SENDER),
    ],
)
async def test_policy_refusals_have_their_codes(world: World, case: str, code: ErrorCode) -> None:
    if case == "non-member":
        call = world.submit(world.olga, world.seal(world.olga))
    elif case == "stranger":
        call = world.submit(world.tess, world.seal(world.tess, to=[world.carl, world.olga]))
    elif case == "skew":
        call = world.submit(
            world.tess, world.seal(world.tess, timestamp_ms=world.clock.now_ms() - 301_000)
        )
    else:
        call = world.submit(
            world.tess, world.seal(world.tess, sender_device=world.carl.device.id.bytes)
        )
    with pytest.raises(EnvelopeError) as caught:
        await call
    assert caught.value.code is code
    assert world.pushes == []


async def test_concurrent_sends_commit_together_in_arrival_order(world: World) -> None:
    raws = [world.seal(world.tess, f"m{i}") for i in range(50)]
    results = await asyncio.gather(*(world.submit(world.tess, raw) for raw in raws))
    assert len(results) == 50
    assert [s for _, s, _, _ in world.pushes] == list(range(1, 51))
    assert [data for _, _, data, _ in world.pushes] == raws


async def test_identical_retry_is_idempotent_and_a_different_one_is_a_duplicate(
    world: World,
) -> None:
    message_id = os.urandom(16)
    raw = world.seal(world.tess, message_id=message_id)
    first, again, concurrent = await asyncio.gather(
        world.submit(world.tess, raw), world.submit(world.tess, raw), world.submit(world.tess, raw)
    )
    assert {r.message_id for r in (first, again, concurrent)} == {message_id}
    assert len(world.pushes) == 1
    with pytest.raises(EnvelopeError) as caught:
        await world.submit(world.tess, world.seal(world.tess, "other", message_id=message_id))
    assert caught.value.code is ErrorCode.DUPLICATE_MESSAGE


async def test_acknowledged_deliveries_leave_the_queue(world: World) -> None:
    for i in range(5):
        await world.submit(world.tess, world.seal(world.tess, f"m{i}"))
    world.delivery.acknowledge(world.carl.device.id, 3)
    await world.submit(world.tess, world.seal(world.tess, "flush"))  # acks ride with the next batch
    queue = await world.delivery.queue(world.carl.device.id, after=0, limit=10)
    assert [q.seq for q in queue.deliveries] == [4, 5, 6]
    assert queue.acked_seq == 3


async def test_queued_sends_commit_in_batches_of_at_most_max_batch_envelopes(
    database: Database, clock: FakeClock
) -> None:
    batches: list[list[Push]] = []
    settings = Settings(max_batch_envelopes=2)
    world = await new_world(database, clock, settings, lambda done: batches.append(list(done)))
    tess = world.tess
    world.delivery.start()
    try:
        # All five are queued before the commit loop runs: it takes them two at a time.
        futures = [
            world.delivery.enqueue(
                world.seal(tess, f"m{i}"), account_id=tess.account, device=tess.device
            )
            for i in range(5)
        ]
        for future in futures:
            assert not (await future).duplicate
    finally:
        await world.delivery.stop()
    assert [len(batch) for batch in batches] == [2, 2, 1]  # on_committed: once per batch
    assert [seq for batch in batches for _, seq, _, _ in batch] == [1, 2, 3, 4, 5]
    queue = await world.delivery.queue(world.carl.device.id, after=0, limit=10)
    assert [q.seq for q in queue.deliveries] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("processes", [2, 0], ids=["worker-processes", "in-thread"])
async def test_a_burst_gets_the_right_verdict_for_every_signature(
    database: Database, clock: FakeClock, processes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load the checks run ahead in worker processes (or, with none, with each batch):
    either way a bad signature is refused, nothing of it is stored, the rest keep their order."""
    world = await new_world(database, clock, Settings(signature_processes=processes))
    workers = world.delivery.signature_workers
    chunks: list[int] = []
    submit = workers.submit

    def counted(items: Sequence[Item]) -> object:
        chunks.append(len(items))
        return submit(items)

    monkeypatch.setattr(workers, "submit", counted)
    world.delivery.start()
    try:
        await world.submit(world.tess, world.seal(world.tess, "first"))  # starts the workers
        await workers_up(workers, processes)
        bad = {3, 40, 41, 299}
        raws = []
        for i in range(300):
            raw = bytearray(world.seal(world.tess, f"m{i}"))
            if i in bad:
                raw[-1] ^= 1
            raws.append(bytes(raw))
        sends = [world.submit(world.tess, raw) for raw in raws]
        results = await asyncio.gather(*sends, return_exceptions=True)
    finally:
        await world.delivery.stop()
    refused = {i for i, r in enumerate(results) if isinstance(r, EnvelopeError)}
    assert refused == bad
    assert {r.code for r in results if isinstance(r, EnvelopeError)} == {ErrorCode.BAD_SIGNATURE}
    stored = [data for _, _, data, _ in world.pushes[1:]]
    assert stored == [raw for i, raw in enumerate(raws) if i not in bad]
    if processes:
        assert sum(chunks) > 100  # most were checked ahead, by the workers
    else:
        assert chunks == []


async def test_killed_signature_workers_leave_no_send_unchecked(
    database: Database, clock: FakeClock
) -> None:
    world = await new_world(database, clock, Settings(signature_processes=2))
    workers = world.delivery.signature_workers
    world.delivery.start()
    try:
        await world.submit(world.tess, world.seal(world.tess, "first"))
        await workers_up(workers, 2)
        raws = [world.seal(world.tess, f"m{i}") for i in range(200)]
        forged = bytearray(raws[150])
        forged[-1] ^= 1
        raws[150] = bytes(forged)
        sends = [asyncio.ensure_future(world.submit(world.tess, raw)) for raw in raws]
        await asyncio.sleep(0)  # queued, and the first chunks handed to the workers
        for pid in workers.pids:
            os.kill(pid, signal.SIGKILL)
        results = await asyncio.gather(*sends, return_exceptions=True)
    finally:
        await world.delivery.stop()
    refused = [i for i, r in enumerate(results) if isinstance(r, EnvelopeError)]
    assert refused == [150]
    assert len(world.pushes) == 1 + 199


async def test_sends_queued_before_the_workers_came_up_are_still_committed(
    database: Database, clock: FakeClock
) -> None:
    # A burst queued while the workers start, committed a few at a time, so the workers come
    # up with most of it still waiting: nothing new arrives to hand it to them, yet it commits.
    world = await new_world(database, clock, Settings(signature_processes=2, max_batch_envelopes=4))
    world.delivery.start()
    try:
        raws = [world.seal(world.tess, f"m{i}") for i in range(1000)]
        sends = [world.submit(world.tess, raw) for raw in raws]
        results = await asyncio.wait_for(asyncio.gather(*sends), timeout=60)
        assert world.delivery.signature_workers.running
    finally:
        await world.delivery.stop()
    assert all(not r.duplicate for r in results)
    assert [data for _, _, data, _ in world.pushes] == raws
