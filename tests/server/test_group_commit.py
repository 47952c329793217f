"""Group commit in the delivery service: a batch holds at most `max_batch_envelopes` sends."""

from __future__ import annotations

from collections.abc import Sequence

from securemsg.clock import FakeClock
from securemsg.server.delivery import Delivery, Push
from securemsg.settings import Settings
from securemsg.storage.accounts import Role
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Database
from tests.server.test_delivery import World, _member


async def test_queued_sends_commit_in_batches_of_at_most_max_batch_envelopes(
    database: Database, clock: FakeClock
) -> None:
    batches: list[list[Push]] = []

    def committed(pushes: Sequence[Push]) -> None:  # called once per committed batch
        batches.append(list(pushes))

    delivery = Delivery(database, Settings(max_batch_envelopes=2), clock, committed)
    now = clock.now_ms()
    tess = await _member(database, "tess", Role.THERAPIST, now)
    carl = await _member(database, "carl", Role.CLIENT, now)
    olga = await _member(database, "olga", Role.CLIENT, now)
    async with database.write() as conn:
        conversation = await ConversationStore(conn).create(
            therapist_id=tess.account, client_id=carl.account, now_ms=now
        )
    world = World(delivery, [], tess, carl, olga, conversation, clock)
    delivery.start()
    try:
        # All five are queued before the commit loop runs: it takes them two at a time.
        futures = [
            delivery.enqueue(world.seal(tess, f"m{i}"), account_id=tess.account, device=tess.device)
            for i in range(5)
        ]
        for future in futures:
            assert not (await future).duplicate
    finally:
        await delivery.stop()
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [seq for batch in batches for _, seq, _, _ in batch] == [1, 2, 3, 4, 5]
    queue = await delivery.queue(carl.device.id, after=0, limit=10)
    assert [q.seq for q in queue.deliveries] == [1, 2, 3, 4, 5]
