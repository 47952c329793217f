"""Delivery: checking sends, committing them in groups, and reading device queues.

A send is acknowledged (`Accepted`) only after the transaction holding its envelope and its
queue rows has committed. Sends that arrive while a batch is committing wait for the next one;
there is no linger timer, so under load batches grow by themselves and when idle a send commits
at once. Checks that need no database (structure, sender, clock, signature) run before queueing;
membership and recipients are checked inside the batch transaction, against committed state.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence

from securemsg.clock import Clock
from securemsg.crypto.envelope import verify_envelope_signature
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.signing import verify_signature
from securemsg.protocol.envelope import Envelope, EnvelopeLimits, parse_envelope
from securemsg.protocol.errors import EnvelopeError, ErrorCode
from securemsg.protocol.frames import attach_message
from securemsg.settings import Settings
from securemsg.storage.database import Database
from securemsg.storage.devices import Device, DeviceStore
from securemsg.storage.errors import StorageError
from securemsg.storage.messages import MessageStore, NewEnvelope, QueuedDelivery

log = logging.getLogger("securemsg.delivery")

Push = tuple[uuid.UUID, int, bytes]  # (recipient device, its sequence number, envelope bytes)


@dataclasses.dataclass(frozen=True)
class Accepted:
    conversation_id: uuid.UUID
    message_id: bytes
    received_ms: int
    duplicate: bool = False


@dataclasses.dataclass(frozen=True)
class Queue:
    """A slice of one device's queue, with what a resume needs to know."""

    deliveries: list[QueuedDelivery]
    expired_seq: int
    acked_seq: int


@dataclasses.dataclass
class _Pending:
    envelope: Envelope
    conversation_id: uuid.UUID
    sender_account: uuid.UUID
    sender_device: uuid.UUID
    verified: asyncio.Future[None]
    future: asyncio.Future[Accepted]


class AttachError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Delivery:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        clock: Clock,
        on_committed: Callable[[Sequence[Push]], None],
    ) -> None:
        self.database = database
        self.clock = clock
        self.limits = EnvelopeLimits(
            max_envelope_bytes=settings.max_envelope_bytes, max_recipients=settings.max_recipients
        )
        self.skew_ms = int(settings.clock_skew_seconds * 1000)
        self.max_batch = max(1, settings.max_batch_envelopes)
        self.on_committed = on_committed
        self._queue: collections.deque[_Pending] = collections.deque()
        self._acks: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Ed25519 verification releases the GIL: a worker thread keeps it off the event loop.
        self._verifier = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="verify"
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout=10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(_unavailable())
        self._verifier.shutdown(wait=False, cancel_futures=True)

    # -- attaching ------------------------------------------------------------------------

    async def attach(
        self, *, account_id: uuid.UUID, device_id: uuid.UUID, challenge: bytes, signature: bytes
    ) -> Device:
        """The device, once it proved it holds its signing key by signing `challenge`."""
        async with self.database.read() as conn:
            device = await DeviceStore(conn).get(device_id)
        if device is None or device.account_id != account_id or not device.active:
            raise AttachError(ErrorCode.BAD_DEVICE, "no active device with that id on this account")
        try:
            verify_signature(device.signing_key, attach_message(challenge, device_id), signature)
        except InvalidSignature:
            raise AttachError(ErrorCode.BAD_SIGNATURE, "attach signature does not verify") from None
        return device

    # -- sending --------------------------------------------------------------------------

    async def submit(self, raw: bytes, *, account_id: uuid.UUID, device: Device) -> Accepted:
        """Check, store and queue one envelope; raises EnvelopeError with the wire code."""
        envelope = parse_envelope(raw, self.limits)
        if envelope.sender_account != account_id.bytes or envelope.sender_device != device.id.bytes:
            raise EnvelopeError(
                "envelope sender is not the authenticated device", code=ErrorCode.WRONG_SENDER
            )
        now_ms = self.clock.now_ms()
        if abs(envelope.timestamp_ms - now_ms) > self.skew_ms:
            raise EnvelopeError(
                f"envelope timestamp is more than {self.skew_ms // 1000} s from server time",
                code=ErrorCode.CLOCK_SKEW,
            )
        loop = asyncio.get_running_loop()
        # Verify in a worker thread, but queue now: the batch waits for the verdict, so sends
        # are stored in the order they arrived even when their checks finish out of order.
        verified = loop.run_in_executor(
            self._verifier, verify_envelope_signature, envelope, device.signing_key
        )
        pending = _Pending(
            envelope=envelope,
            conversation_id=uuid.UUID(bytes=envelope.conversation_id),
            sender_account=account_id,
            sender_device=device.id,
            verified=verified,
            future=loop.create_future(),
        )
        self._queue.append(pending)
        self._wake.set()
        return await pending.future

    def acknowledge(self, device_id: uuid.UUID, seq: int) -> None:
        """Record a cumulative ack; it is written with the next batch."""
        if seq > self._acks.get(device_id, 0):
            self._acks[device_id] = seq
            self._wake.set()

    # -- reading queues -------------------------------------------------------------------

    async def queue(self, device_id: uuid.UUID, *, after: int, limit: int) -> Queue:
        async with self.database.read() as conn:
            store = MessageStore(conn)
            _last, acked, expired = await store.cursor(device_id)
            rows = await store.queued(device_id, after=max(after, expired), limit=limit)
        return Queue(rows, expired, acked)

    # -- the group-commit loop ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._drained.set()
            await self._wake.wait()
            self._wake.clear()
            self._drained.clear()
            while self._queue or self._acks:
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                ]
                batch = await self._drop_unverified(batch)
                acks, self._acks = self._acks, {}
                try:
                    pushes = await self._commit(batch, acks)
                except StorageError as exc:
                    log.error("delivery batch of %d failed: %s", len(batch), exc)
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(_unavailable())
                    for device_id, seq in acks.items():
                        self._acks[device_id] = max(seq, self._acks.get(device_id, 0))
                    await asyncio.sleep(0.05)  # the database is struggling: don't spin
                    continue
                if pushes:
                    self.on_committed(pushes)

    @staticmethod
    async def _drop_unverified(batch: list[_Pending]) -> list[_Pending]:
        verdicts = await asyncio.gather(*(p.verified for p in batch), return_exceptions=True)
        kept = []
        for pending, verdict in zip(batch, verdicts, strict=True):
            if verdict is None:
                kept.append(pending)
            elif not pending.future.done():
                error = EnvelopeError(
                    "envelope signature does not verify", code=ErrorCode.BAD_SIGNATURE
                )
                if not isinstance(verdict, InvalidSignature):
                    error = _unavailable()
                pending.future.set_exception(error)
        return kept

    async def _commit(self, batch: list[_Pending], acks: dict[uuid.UUID, int]) -> list[Push]:
        now_ms = self.clock.now_ms()
        results: dict[int, Accepted | EnvelopeError] = {}
        pushes: list[Push] = []
        async with self.database.write() as conn:
            await self.database.serialise_writers(conn)
            store = MessageStore(conn)
            await store.acknowledge(acks)
            if batch:
                accepted, new, recipients = await self._check_batch(store, batch, results, now_ms)
                ids = await store.insert_envelopes([n for _, n in new], now_ms=now_ms)
                counts = collections.Counter(d for i, _ in new for d in recipients[i])
                first = await store.allocate_seqs(counts)
                rows: list[tuple[uuid.UUID, int, int]] = []
                for (index, item), envelope_id in zip(new, ids, strict=True):
                    for device_id in recipients[index]:
                        seq = first[device_id]
                        first[device_id] = seq + 1
                        rows.append((device_id, seq, envelope_id))
                        pushes.append((device_id, seq, item.data))
                    results[index] = accepted[index]
                await store.insert_deliveries(rows)
        for index, pending in enumerate(batch):
            result = results[index]
            if pending.future.done():
                continue
            if isinstance(result, Accepted):
                pending.future.set_result(result)
            else:
                pending.future.set_exception(result)
        return pushes

    async def _check_batch(
        self,
        store: MessageStore,
        batch: list[_Pending],
        results: dict[int, Accepted | EnvelopeError],
        now_ms: int,
    ) -> tuple[dict[int, Accepted], list[tuple[int, NewEnvelope]], dict[int, list[uuid.UUID]]]:
        keys = [(p.conversation_id, p.envelope.message_id) for p in batch]
        existing = await store.existing(keys)
        members = await store.members(p.conversation_id for p in batch)
        devices = await store.active_devices(a for m in members.values() for a in m)
        accepted: dict[int, Accepted] = {}
        new: list[tuple[int, NewEnvelope]] = []
        recipients: dict[int, list[uuid.UUID]] = {}
        seen: dict[tuple[uuid.UUID, bytes], int] = {}
        for index, pending in enumerate(batch):
            key = keys[index]
            envelope = pending.envelope
            earlier = existing.get(key)
            if earlier is not None or key in seen:
                same = (
                    earlier.data == envelope.raw
                    if earlier is not None
                    else batch[seen[key]].envelope.raw == envelope.raw
                )
                if not same:
                    results[index] = EnvelopeError(
                        "message id already used in this conversation",
                        code=ErrorCode.DUPLICATE_MESSAGE,
                    )
                elif earlier is not None:
                    results[index] = Accepted(key[0], key[1], earlier.received_ms, duplicate=True)
                else:
                    results[index] = Accepted(key[0], key[1], now_ms, duplicate=True)
                continue
            conversation_members = members.get(pending.conversation_id, frozenset())
            if pending.sender_account not in conversation_members:
                results[index] = EnvelopeError(
                    "sender is not a member of this conversation", code=ErrorCode.NOT_MEMBER
                )
                continue
            if devices.get(pending.sender_device) != pending.sender_account:
                results[index] = EnvelopeError(
                    "sending device is no longer active", code=ErrorCode.WRONG_SENDER
                )
                continue
            targets = [uuid.UUID(bytes=d) for d in envelope.recipient_devices]
            strangers = [t for t in targets if devices.get(t) not in conversation_members]
            if strangers:
                results[index] = EnvelopeError(
                    f"wrap for {strangers[0]}, which is not an active device of a member",
                    code=ErrorCode.BAD_RECIPIENTS,
                )
                continue
            seen[key] = index
            recipients[index] = [t for t in targets if t != pending.sender_device]
            new.append(
                (
                    index,
                    NewEnvelope(
                        conversation_id=pending.conversation_id,
                        message_id=envelope.message_id,
                        sender_device=pending.sender_device,
                        sent_ms=envelope.timestamp_ms,
                        data=envelope.raw,
                    ),
                )
            )
            accepted[index] = Accepted(pending.conversation_id, envelope.message_id, now_ms)
        return accepted, new, recipients


def _unavailable() -> EnvelopeError:
    return EnvelopeError(
        "storage unavailable; the message was not stored", code=ErrorCode.UNAVAILABLE
    )
