"""Incoming deliveries: queued with back-pressure, then verified, decrypted and judged.

The connection puts deliveries into an `Inbound` queue (bounded: deliveries beyond the limit
are fetched again later instead of growing memory); the application's `events()` loop takes
them out and `Inbox.process` turns each into events. Processing works on copies: the receive
chain and the cursor change only when `Processed.commit` runs, which the client calls once the
application has consumed the events, so a crash in between replays the delivery instead of
losing it.

Checks, in order: envelope layout; the conversation is one this account reads; the sender is one
of its two readers; the sender device is on the sender's verified device list; signature, wrap,
key commitment, body (`open_envelope`); payload layout; the sender device's chain.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from securemsg.client.chain import ReceiveChain
from securemsg.client.conversations import Conversation
from securemsg.client.errors import ClientError, ConnectionLost, RequestFailed
from securemsg.client.events import (
    AccountId,
    Anomaly,
    CaughtUp,
    ConversationId,
    DeviceId,
    Event,
    Gap,
    Message,
    MessageId,
    Undecryptable,
)
from securemsg.client.grants import GrantBook
from securemsg.client.keystore import KeystoreState
from securemsg.client.payload import PayloadError, chain_hash, decode_payload
from securemsg.client.peers import Peers
from securemsg.crypto.envelope import open_envelope
from securemsg.crypto.errors import CryptoError
from securemsg.protocol.envelope import Envelope, EnvelopeLimits, parse_envelope
from securemsg.protocol.errors import EnvelopeError


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    envelope: bytes | None  # None: the frame's envelope was not valid base64
    kind: str | None = None  # a system event ("grant", "grant_ended"); None: an envelope


@dataclass(frozen=True, slots=True)
class Terminal:
    """The connection ended for good; `events()` raises this error once the queue is empty."""

    error: ClientError


InboundItem = Delivery | Gap | CaughtUp | Terminal | Event


class Inbound:
    """The queue between the connection and the application.

    The connection never blocks on it (it must keep reading `accepted` replies even when the
    application is busy sending): a delivery that finds the queue full is refused, and once the
    application has drained half of it, `on_drained` asks the connection to resume from the last
    delivery it queued.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.on_drained: Callable[[], None] | None = None
        self._items: collections.deque[InboundItem] = collections.deque()
        self._ready = asyncio.Event()
        self._deliveries = 0
        self._overflowed = False

    def has_room(self) -> bool:
        """Whether a delivery fits; if not, it must be dropped and fetched again later."""
        if self._deliveries >= self.limit:
            self._overflowed = True
        return not self._overflowed

    def put_delivery(self, item: Delivery) -> None:
        self._deliveries += 1
        self.put(item)

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def put(self, item: InboundItem) -> None:
        self._items.append(item)
        self._ready.set()

    async def get(self) -> InboundItem:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, Delivery):
            self._deliveries -= 1
            if self._overflowed and self._deliveries <= self.limit // 2:
                self._overflowed = False
                if self.on_drained is not None:
                    self.on_drained()
        return item


@dataclass
class Processed:
    events: list[Event]
    seq: int | None = None
    chain_key: tuple[uuid.UUID, uuid.UUID] | None = None
    chain: ReceiveChain | None = None
    after_commit: Callable[[], None] | None = None  # e.g. a grant was shown to the application
    _done: bool = field(default=False, repr=False)

    def commit(self, state: KeystoreState) -> None:
        """The application consumed the events: advance the chain and the cursor."""
        if self._done:
            return
        self._done = True
        if self.chain_key is not None and self.chain is not None:
            state.receive_chains[self.chain_key] = self.chain
        if self.seq is not None:
            state.cursor = max(state.cursor, self.seq)
        if self.after_commit is not None:
            self.after_commit()


ConversationLookup = Callable[[uuid.UUID], Awaitable[Conversation | None]]


class Inbox:
    def __init__(
        self,
        state: KeystoreState,
        peers: Peers,
        conversation: ConversationLookup,
        *,
        limits: EnvelopeLimits,
        retry_seconds: float = 1.0,
        grants: GrantBook | None = None,
    ) -> None:
        self.state = state
        self.peers = peers
        self.conversation = conversation
        self.limits = limits
        self.retry_seconds = retry_seconds
        self.grants = grants

    async def process(self, item: Delivery | Gap | CaughtUp) -> Processed:
        if isinstance(item, Gap):
            return Processed([item], seq=item.last)
        if isinstance(item, CaughtUp):
            return Processed([item])
        if item.seq <= self.state.cursor:
            return Processed([], seq=item.seq)  # already consumed before a restart
        if item.kind is not None:
            return await self._system_event(item.seq, item.kind, item.envelope)
        if item.envelope is None:
            return Processed([Undecryptable(item.seq, "envelope is not valid base64")], item.seq)
        try:
            envelope = parse_envelope(item.envelope, self.limits)
        except EnvelopeError as error:
            return Processed([Undecryptable(item.seq, f"malformed envelope: {error}")], item.seq)
        while True:
            try:
                return await self._open(item.seq, envelope)
            except ConnectionLost:
                # A key lookup needs the server; the delivery waits rather than being dropped.
                await asyncio.sleep(self.retry_seconds)

    async def _system_event(self, seq: int, kind: str, data: bytes | None) -> Processed:
        if self.grants is None:
            return Processed([Undecryptable(seq, f"unknown delivery kind {kind!r}")], seq)
        while True:
            try:
                events, after_commit = await self.grants.on_delivery(kind, data)
            except ConnectionLost:
                await asyncio.sleep(self.retry_seconds)
                continue
            return Processed(events, seq, after_commit=after_commit)

    async def _open(self, seq: int, envelope: Envelope) -> Processed:
        conversation_id = ConversationId(uuid.UUID(bytes=envelope.conversation_id))
        sender = AccountId(uuid.UUID(bytes=envelope.sender_account))
        device = DeviceId(uuid.UUID(bytes=envelope.sender_device))
        message_id = MessageId(envelope.message_id.hex())

        def refuse(reason: str) -> Processed:
            return Processed(
                [Undecryptable(seq, reason, conversation_id, sender, device, message_id)], seq
            )

        supervised = self.grants is not None and (
            conversation_id in self.grants.supervised_conversations()
        )
        try:
            conversation = None if supervised else await self.conversation(conversation_id)
        except ClientError as error:
            if isinstance(error, ConnectionLost):
                raise
            return refuse(f"conversation cannot be trusted: {error}")
        if conversation is None:
            # A supervisor reads conversations it is not a member of, under a verified grant.
            refusal = (
                "not a conversation this account reads"
                if self.grants is None
                else self.grants.admit_supervised(conversation_id, sender)
            )
            if refusal is not None:
                return refuse(refusal)
        elif sender not in (conversation.me.account, conversation.peer.account):
            return refuse("sender is not a reader of this conversation")
        sent_ms = envelope.timestamp_ms
        signing_key = self.peers.signing_key(sender, envelope.sender_device, sent_ms)
        if signing_key is None:
            try:
                await self.peers.refresh(sender)
            except RequestFailed as error:
                return refuse(f"the sender's devices cannot be fetched: {error}")
            signing_key = self.peers.signing_key(sender, envelope.sender_device, sent_ms)
        if signing_key is None:
            record = self.peers.record(sender)
            if record is not None and record.pending_identity_key is not None:
                return refuse("the sender's identity key changed and was not accepted yet")
            if record is not None and envelope.sender_device in record.revoked_ms:
                return refuse("sender device was revoked before this message was dated")
            return refuse("sender device is not on the sender's verified device list")
        try:
            opened = open_envelope(
                envelope.raw,
                recipient_device_id=self.state.device_id.bytes,
                recipient=self.state.device_keys,
                sender_signing_key=signing_key,
                limits=self.limits,
            )
            payload = decode_payload(opened.plaintext)
        except (CryptoError, PayloadError) as error:
            return refuse(str(error))

        key = (conversation_id, device)
        chain = self.state.receive_chains.get(key, ReceiveChain()).copy()
        digest = chain_hash(
            conversation_id=envelope.conversation_id,
            message_id=envelope.message_id,
            sender_device=envelope.sender_device,
            payload=opened.plaintext,
        )
        verdict = chain.check(payload.counter, payload.previous_hash, digest, envelope.message_id)
        events: list[Event] = [
            Anomaly(f.kind, conversation_id, sender, device, f.first, f.last, f.detail, message_id)
            for f in verdict.findings
        ]
        if verdict.deliver:
            events.append(
                Message(
                    conversation=conversation_id,
                    message_id=message_id,
                    sender=sender,
                    sender_device=device,
                    sent_ms=envelope.timestamp_ms,
                    counter=payload.counter,
                    content=payload.content,
                    outgoing=sender == self.state.account,
                    seq=seq,
                )
            )
        return Processed(events, seq, key, chain)
