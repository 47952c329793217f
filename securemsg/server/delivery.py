"""Delivery: checking sends, committing them in groups, and reading device queues.

A send is acknowledged (`Accepted`) only after the transaction holding its envelope and its
queue rows has committed. Sends that arrive while a batch is committing wait for the next one;
there is no linger timer, so under load batches grow by themselves and when idle a send commits
at once. Structure, sender and clock are checked before queueing; the signature after, before
the transaction; membership and recipients inside the batch transaction, against committed state.

Costs on the event loop are per batch, not per message, where they can be (DESIGN §11). On
SQLite the whole batch is one call on the database's writer thread (`Database.write_batch`): the
signature checks not yet done first (outside the transaction), then one transaction. PostgreSQL
checks them in one executor call and runs the same statements on the async engine (its round
trips are cheap). Under load, signatures are checked ahead instead: when sends queue up, worker
processes (server/signatures.py) check them in chunks while the batch before them commits, and
the writer thread only writes. Either way the verdicts are in before the transaction starts: a
send whose signature does not verify is never stored, and sends are stored in the order they
arrived.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

from securemsg.audit.events import Actor, AuditAction, AuditEvent, Outcome
from securemsg.clock import Clock
from securemsg.crypto.envelope import check_envelope_signatures
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.signing import verify_signature
from securemsg.protocol.envelope import Envelope, EnvelopeLimits, parse_envelope
from securemsg.protocol.errors import EnvelopeError, ErrorCode
from securemsg.protocol.frames import attach_message
from securemsg.server.login import Principal
from securemsg.server.signatures import SignatureWorkers
from securemsg.settings import Settings
from securemsg.storage.audit import AuditLog
from securemsg.storage.database import Connection, Database
from securemsg.storage.devices import Device, DeviceStore
from securemsg.storage.errors import StorageError
from securemsg.storage.grants import GrantStore
from securemsg.storage.messages import (
    BatchStore,
    MessageStore,
    NewEnvelope,
    QueuedDelivery,
    StoredEnvelope,
)

log = logging.getLogger("securemsg.delivery")

# (recipient device, its sequence number, envelope bytes, kind: "message" or a system event)
Push = tuple[uuid.UUID, int, bytes, str]


@dataclasses.dataclass(frozen=True, slots=True)
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


# With this many sends waiting for a check, worker processes check them ahead, in chunks.
_CHECK_AHEAD_AT = 64
_CHECK_AHEAD_CHUNK = 128


class _Pending:
    """One queued send. `verdict` is set before its batch's transaction, by a check ahead in a
    worker process or by the batch's own check: True if the signature verifies, False if not."""

    __slots__ = (
        "checking",
        "conversation_id",
        "envelope",
        "future",
        "sender_account",
        "sender_device",
        "signing_key",
        "verdict",
    )

    def __init__(
        self,
        envelope: Envelope,
        conversation_id: uuid.UUID,
        sender_account: uuid.UUID,
        sender_device: uuid.UUID,
        signing_key: bytes,
        future: asyncio.Future[Accepted],
    ) -> None:
        self.envelope = envelope
        self.conversation_id = conversation_id
        self.sender_account = sender_account
        self.sender_device = sender_device
        self.signing_key = signing_key
        self.future = future
        self.verdict: bool | None = None  # not checked yet
        self.checking = False  # being checked ahead, in a worker process


# What a batch transaction hands back: a result per send (in batch order), and the pushes.
_Outcome = tuple[list["Accepted | EnvelopeError"], list[Push]]


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
        # The sends of `_queue` whose signature check has not started, in order (a suffix of it,
        # but for sends whose check ahead failed: those are checked by their batch).
        self._unchecked: collections.deque[_Pending] = collections.deque()
        self._acks: dict[uuid.UUID, int] = {}
        self._committing_acks: dict[uuid.UUID, int] = {}  # those of the batch being committed
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.signature_workers = SignatureWorkers(settings.signature_processes)

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
        await self.signature_workers.close()

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
        # An ack this process received but has not committed yet (it rides with the next batch)
        # still counts: a device that acks, disconnects and comes straight back resumes after it.
        pending = max(self._acks.get(device.id, 0), self._committing_acks.get(device.id, 0))
        if pending > device.acked_seq:
            device = dataclasses.replace(device, acked_seq=pending)
        return device

    # -- sending --------------------------------------------------------------------------

    async def submit(self, raw: bytes, *, account_id: uuid.UUID, device: Device) -> Accepted:
        """Check, store and queue one envelope; raises EnvelopeError with the wire code."""
        return await self.enqueue(raw, account_id=account_id, device=device)

    def enqueue(
        self, raw: bytes, *, account_id: uuid.UUID, device: Device
    ) -> asyncio.Future[Accepted]:
        """Check and queue one envelope; the future resolves once its batch has committed.

        Raises EnvelopeError at once for what needs no database (structure, sender, clock);
        the future fails with EnvelopeError for the rest (signature, membership, duplicates).
        """
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
        pending = _Pending(
            envelope,
            uuid.UUID(bytes=envelope.conversation_id),
            account_id,
            device.id,
            device.signing_key,
            asyncio.get_running_loop().create_future(),
        )
        # The signature is checked before the batch's transaction: by a worker process under
        # load (`_check_ahead`), else with the rest of its batch (`_verify`).
        self.signature_workers.start()  # once, on the first send: idle servers never pay for it
        self._queue.append(pending)
        self._unchecked.append(pending)
        self._check_ahead()
        self._wake.set()
        return pending.future

    def acknowledge(self, device_id: uuid.UUID, seq: int) -> None:
        """Record a cumulative ack; it is written with the next batch."""
        if seq > self._acks.get(device_id, 0):
            self._acks[device_id] = seq
            self._wake.set()

    # -- system events ------------------------------------------------------------------

    async def queue_event(
        self,
        conn: Connection,
        *,
        conversation_id: uuid.UUID,
        event_id: bytes,
        kind: str,
        data: bytes,
        sender_device: uuid.UUID,
        recipients: Sequence[uuid.UUID],
        now_ms: int,
    ) -> list[Push]:
        """Queue a system event (e.g. a grant) for `recipients` in the caller's transaction.

        Events travel in the same per-device queues as messages, so every participant sees them
        in order with the messages around them. Hand the returned pushes to `on_committed` after
        the caller's transaction commits.
        """
        await self.database.serialise_writers(conn)
        store = MessageStore(conn)
        event = NewEnvelope(conversation_id, event_id, sender_device, now_ms, data, kind)
        (envelope_id,) = await store.insert_envelopes([event], now_ms=now_ms)
        first = await store.allocate_seqs(dict.fromkeys(recipients, 1))
        await store.insert_deliveries([(d, first[d], envelope_id) for d in recipients])
        return [(d, first[d], data, kind) for d in recipients]

    # -- reading queues -------------------------------------------------------------------

    async def queue(self, device_id: uuid.UUID, *, after: int, limit: int) -> Queue:
        """A participant's device reads its queue (no audit: it is their own conversation)."""
        async with self.database.read() as conn:
            store = MessageStore(conn)
            _last, acked, expired = await store.cursor(device_id)
            rows = await store.queued(device_id, after=max(after, expired), limit=limit)
        return Queue(rows, expired, acked)

    async def supervisor_queue(
        self, reader: Principal, device_id: uuid.UUID, *, after: int, limit: int
    ) -> Queue:
        """A supervisor's device reads its queue: audited in the same transaction, or nothing.

        Deliveries of conversations without a grant in force now (expired, revoked) are dropped
        from the queue and the attempt is recorded as denied; the rest are recorded as read.
        If the audit write fails the transaction rolls back and nothing is returned.
        """
        now_ms = self.clock.now_ms()
        async with self.database.write() as conn:
            store = MessageStore(conn)
            _last, acked, expired = await store.cursor(device_id)
            rows = await store.queued(device_id, after=max(after, expired), limit=limit)
            if not rows:
                return Queue(rows, expired, acked)
            conversations = {r.conversation_id for r in rows if r.conversation_id is not None}
            granted = {
                g.conversation_id
                for g in await GrantStore(conn).active(
                    conversations, now_ms=now_ms, supervisor_id=reader.account_id
                )
            }
            allowed = [r for r in rows if r.conversation_id in granted or r.kind != "message"]
            refused = [r for r in rows if r not in allowed]
            await store.drop(device_id, [r.seq for r in refused])
            events = [
                supervisor_read_event(reader, conversation, outcome, seqs, device_id)
                for conversation, outcome, seqs in _by_conversation(allowed, refused)
            ]
            await AuditLog(conn).record_many(events, now_ms=now_ms)
        return Queue(allowed, expired, acked)

    # -- the group-commit loop ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch and not self._acks:
                if not self._queue:
                    self._drained.set()
                await self._wake.wait()  # a send, an ack, or a finished check ahead
                self._wake.clear()
                self._drained.clear()
                continue
            acks, self._acks = self._acks, {}
            self._committing_acks = acks
            try:
                pushes = await self._commit(batch, acks)
            except asyncio.CancelledError:  # stopping: a commit still under way may yet land
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(_unavailable())
                raise
            except Exception as exc:
                if isinstance(exc, StorageError):
                    log.error("delivery batch of %d failed: %s", len(batch), exc)
                else:
                    log.exception("delivery batch of %d failed", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(_unavailable())
                for device_id, seq in acks.items():
                    self._acks[device_id] = max(seq, self._acks.get(device_id, 0))
                await asyncio.sleep(0.05)  # the database is struggling: don't spin
                continue
            finally:
                self._committing_acks = {}
            if pushes:
                self.on_committed(pushes)

    async def _commit(self, batch: list[_Pending], acks: dict[uuid.UUID, int]) -> list[Push]:
        now_ms = self.clock.now_ms()
        if self.database.has_batch_writer:
            # One call on SQLite's writer thread: the signature checks, then the transaction.
            # Nothing in it may touch the event loop (the futures are resolved below).
            weight = sum(len(p.envelope.raw) + 200 for p in batch) + 100 * len(acks)
            results, pushes = await self.database.write_batch(
                lambda store: _write_batch(store, batch, acks, now_ms),
                prepare=lambda: self._verify(batch),
                weight=weight,
            )
        else:
            if batch:
                await asyncio.get_running_loop().run_in_executor(None, self._verify, batch)
            async with self.database.write(urgent=True) as conn:
                await self.database.serialise_writers(conn)
                results, pushes = await _write_batch_async(MessageStore(conn), batch, acks, now_ms)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Accepted):
                pending.future.set_result(result)
            else:
                pending.future.set_exception(result)
        return pushes

    def _take_batch(self) -> list[_Pending]:
        """The next batch: sends from the front of the queue, up to one still being checked.

        Under load every worker is then busy, so a chunk being checked comes before any send
        still unchecked: the batch is checked sends, and the writer thread only writes.
        """
        queue, unchecked = self._queue, self._unchecked
        if len(unchecked) >= _CHECK_AHEAD_AT:
            self._check_ahead()  # a worker may have come up since these were queued
        batch: list[_Pending] = []
        while queue and len(batch) < self.max_batch and not queue[0].checking:
            if unchecked and unchecked[0] is queue[0]:
                unchecked.popleft()  # its batch checks it (`_verify`)
            batch.append(queue.popleft())
        return batch

    def _check_ahead(self) -> None:
        """Under load, have worker processes check queued sends' signatures while the batch
        before them commits; the commit loop then takes them checked. A light load never gets
        here (fewer than `_CHECK_AHEAD_AT` waiting): each batch checks its own (`_verify`)."""
        unchecked, workers = self._unchecked, self.signature_workers
        while len(unchecked) >= _CHECK_AHEAD_AT and workers.idle:
            chunk = [unchecked.popleft() for _ in range(min(len(unchecked), _CHECK_AHEAD_CHUNK))]
            checking = workers.submit([_signed(p) for p in chunk])
            assert checking is not None  # a worker was idle
            for pending in chunk:
                pending.checking = True
            checking.add_done_callback(functools.partial(self._checked_ahead, chunk))

    def _checked_ahead(self, chunk: list[_Pending], done: asyncio.Task[list[bool] | None]) -> None:
        for pending in chunk:
            pending.checking = False
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.error("signature check ahead failed", exc_info=error)
        verdicts = None if done.cancelled() or error else done.result()
        if verdicts is not None:  # else left unchecked: their batch checks them (`_verify`)
            for pending, verdict in zip(chunk, verdicts, strict=True):
                pending.verdict = verdict
        self._wake.set()
        self._check_ahead()

    def _verify(self, batch: list[_Pending]) -> None:
        """On a worker thread: a verdict for every send of the batch not checked ahead."""
        todo = [p for p in batch if p.verdict is None]
        if todo:
            verdicts = check_envelope_signatures([_signed(p) for p in todo])
            for pending, verdict in zip(todo, verdicts, strict=True):
                pending.verdict = verdict


# -- one batch transaction: the same steps, on SQLite's writer thread or the async engine -----


def _write_batch(
    store: BatchStore, whole: list[_Pending], acks: Mapping[uuid.UUID, int], now_ms: int
) -> _Outcome:
    store.acknowledge(acks)
    batch = [p for p in whole if p.verdict]
    if not batch:
        return _with_refusals(whole, [], []), []
    keys = [(p.conversation_id, p.envelope.message_id) for p in batch]
    existing = store.existing(keys)
    members = store.members(p.conversation_id for p in batch)
    readers = _readers(members, store.supervisors(members, now_ms=now_ms))
    devices = store.active_devices(a for r in readers.values() for a in r)
    plan = _Plan(batch, keys, existing, members, readers, devices, now_ms)
    ids = store.insert_envelopes(plan.envelopes, now_ms=now_ms)
    first = store.allocate_seqs(plan.counts())
    rows, pushes = plan.deliveries(ids, first)
    store.insert_deliveries(rows)
    return _with_refusals(whole, batch, plan.results), pushes


async def _write_batch_async(
    store: MessageStore, whole: list[_Pending], acks: Mapping[uuid.UUID, int], now_ms: int
) -> _Outcome:
    await store.acknowledge(acks)
    batch = [p for p in whole if p.verdict]
    if not batch:
        return _with_refusals(whole, [], []), []
    keys = [(p.conversation_id, p.envelope.message_id) for p in batch]
    existing = await store.existing(keys)
    members = await store.members(p.conversation_id for p in batch)
    readers = _readers(members, await store.supervisors(members, now_ms=now_ms))
    devices = await store.active_devices(a for r in readers.values() for a in r)
    plan = _Plan(batch, keys, existing, members, readers, devices, now_ms)
    ids = await store.insert_envelopes(plan.envelopes, now_ms=now_ms)
    first = await store.allocate_seqs(plan.counts())
    rows, pushes = plan.deliveries(ids, first)
    await store.insert_deliveries(rows)
    return _with_refusals(whole, batch, plan.results), pushes


def _with_refusals(
    whole: list[_Pending], checked: list[_Pending], results: list[Accepted | EnvelopeError]
) -> list[Accepted | EnvelopeError]:
    """Results for the whole batch: the checked sends' results, refusals for bad signatures."""
    if len(checked) == len(whole):
        return results
    merged: list[Accepted | EnvelopeError] = []
    passed = iter(results)
    for pending in whole:
        if pending.verdict:
            merged.append(next(passed))
        elif pending.verdict is False:
            merged.append(
                EnvelopeError("envelope signature does not verify", code=ErrorCode.BAD_SIGNATURE)
            )
        else:
            merged.append(_unavailable())  # never checked
    return merged


def _readers(
    members: Mapping[uuid.UUID, frozenset[uuid.UUID]],
    supervisors: Mapping[uuid.UUID, set[uuid.UUID]],
) -> dict[uuid.UUID, set[uuid.UUID]]:
    """Who may read each conversation: its members, and supervisors with a grant in force."""
    readers = {c: set(m) for c, m in members.items()}
    for conversation_id, supervisor_ids in supervisors.items():
        if conversation_id in readers:
            readers[conversation_id] |= supervisor_ids
    return readers


class _Plan:
    """The checks of one batch against committed state, and what to write for the sends that pass.

    Pure: no I/O and no event loop (it runs on SQLite's writer thread).
    """

    def __init__(
        self,
        batch: Sequence[_Pending],
        keys: Sequence[tuple[uuid.UUID, bytes]],
        existing: Mapping[tuple[uuid.UUID, bytes], StoredEnvelope],
        members: Mapping[uuid.UUID, frozenset[uuid.UUID]],
        readers: Mapping[uuid.UUID, set[uuid.UUID]],
        devices: Mapping[uuid.UUID, uuid.UUID],
        now_ms: int,
    ) -> None:
        self._batch = batch
        self._existing = existing
        self._members = members
        self._readers = readers
        self._devices = devices
        self._now_ms = now_ms
        self._seen: dict[tuple[uuid.UUID, bytes], int] = {}
        self.envelopes: list[NewEnvelope] = []
        self.recipients: list[list[uuid.UUID]] = []  # per entry of `envelopes`
        self.results: list[Accepted | EnvelopeError] = [
            self._check(index, pending, keys[index]) for index, pending in enumerate(batch)
        ]

    def _check(
        self, index: int, pending: _Pending, key: tuple[uuid.UUID, bytes]
    ) -> Accepted | EnvelopeError:
        batch, existing, seen, now_ms = self._batch, self._existing, self._seen, self._now_ms
        devices = self._devices
        envelope = pending.envelope
        earlier = existing.get(key)
        if earlier is not None or key in seen:
            same = (
                earlier.data == envelope.raw
                if earlier is not None
                else batch[seen[key]].envelope.raw == envelope.raw
            )
            if not same:
                return EnvelopeError(
                    "message id already used in this conversation",
                    code=ErrorCode.DUPLICATE_MESSAGE,
                )
            if earlier is not None:
                return Accepted(key[0], key[1], earlier.received_ms, duplicate=True)
            return Accepted(key[0], key[1], now_ms, duplicate=True)
        if pending.sender_account not in self._members.get(pending.conversation_id, frozenset()):
            return EnvelopeError(
                "sender is not a member of this conversation", code=ErrorCode.NOT_MEMBER
            )
        if devices.get(pending.sender_device) != pending.sender_account:
            return EnvelopeError("sending device is no longer active", code=ErrorCode.WRONG_SENDER)
        targets = [uuid.UUID(bytes=d) for d in envelope.recipient_devices]
        allowed = self._readers[pending.conversation_id]
        strangers = [t for t in targets if devices.get(t) not in allowed]
        if strangers:
            return EnvelopeError(
                f"wrap for {strangers[0]}, which is not an active device of a member",
                code=ErrorCode.BAD_RECIPIENTS,
            )
        seen[key] = index
        self.recipients.append([t for t in targets if t != pending.sender_device])
        self.envelopes.append(
            NewEnvelope(
                conversation_id=pending.conversation_id,
                message_id=envelope.message_id,
                sender_device=pending.sender_device,
                sent_ms=envelope.timestamp_ms,
                data=envelope.raw,
            )
        )
        return Accepted(pending.conversation_id, envelope.message_id, now_ms)

    def counts(self) -> collections.Counter[uuid.UUID]:
        """How many new sequence numbers each recipient device needs."""
        return collections.Counter(d for targets in self.recipients for d in targets)

    def deliveries(
        self, ids: Sequence[int], first: Mapping[uuid.UUID, int]
    ) -> tuple[list[tuple[uuid.UUID, int, int]], list[Push]]:
        """Queue rows (device, seq, envelope id) and pushes, in batch order per device."""
        next_seq = dict(first)
        rows: list[tuple[uuid.UUID, int, int]] = []
        pushes: list[Push] = []
        for item, envelope_id, targets in zip(self.envelopes, ids, self.recipients, strict=True):
            for device_id in targets:
                seq = next_seq[device_id]
                next_seq[device_id] = seq + 1
                rows.append((device_id, seq, envelope_id))
                pushes.append((device_id, seq, item.data, item.kind))
        return rows, pushes


def _by_conversation(
    allowed: Sequence[QueuedDelivery], refused: Sequence[QueuedDelivery]
) -> list[tuple[uuid.UUID, Outcome, list[int]]]:
    groups: dict[tuple[uuid.UUID, Outcome], list[int]] = {}
    for rows, outcome in ((allowed, Outcome.SUCCESS), (refused, Outcome.DENIED)):
        for row in rows:
            if row.kind == "message" and row.conversation_id is not None:
                groups.setdefault((row.conversation_id, outcome), []).append(row.seq)
    return [(c, o, seqs) for (c, o), seqs in groups.items()]


def supervisor_read_event(
    reader: Principal,
    conversation_id: uuid.UUID,
    outcome: Outcome,
    seqs: Sequence[int],
    device_id: uuid.UUID,
) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.SUPERVISOR_READ,
        outcome=outcome,
        actor=Actor(reader.account_id, reader.username, reader.role.value),
        resource=f"conversation:{conversation_id}",
        purpose="clinical supervision",
        details={
            "device": str(device_id),
            "envelopes": len(seqs),
            "first_seq": min(seqs),
            "last_seq": max(seqs),
        },
    )


def _unavailable() -> EnvelopeError:
    return EnvelopeError(
        "storage unavailable; the message was not stored", code=ErrorCode.UNAVAILABLE
    )


def _signed(pending: _Pending) -> tuple[bytes, bytes, bytes]:
    return pending.signing_key, pending.envelope.signed_part, pending.envelope.signature
