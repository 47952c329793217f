"""Sends on their way: durable before the wire, in order, retried with the same message id.

An envelope is recorded in the keystore (and that write is durable) before it is put on the
wire, so a crash can only lead to a retry of the identical bytes, which the server answers with
the same `accepted`. One pump per attached socket sends the queue in order, at most `window`
awaiting a reply, paced below the server's send rate. Replies come in the order of the sends
(docs/protocol.md §3.3); `accepted` names its message, an `error` answers the oldest send on the
wire. A retryable refusal makes the connection start over (every unaccepted send goes again, in
order); a final refusal fails that send with `SendRefused`.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from securemsg.client.errors import ClientError, ConnectionLost, SendRefused
from securemsg.client.events import ConversationId, Event, MessageId, SendFailed
from securemsg.client.keystore import KeystoreState, PendingSend
from securemsg.client.persistence import StateWriter
from securemsg.protocol import frames
from securemsg.protocol.errors import ErrorCode

RETRYABLE = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.NOT_ATTACHED})
STALE_RECIPIENTS = frozenset({ErrorCode.BAD_RECIPIENTS})
FINAL = frozenset(
    {
        ErrorCode.BAD_ENVELOPE,
        ErrorCode.ENVELOPE_TOO_LARGE,
        ErrorCode.TOO_MANY_RECIPIENTS,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.WRONG_SENDER,
        ErrorCode.NOT_MEMBER,
        ErrorCode.DUPLICATE_MESSAGE,
        ErrorCode.CLOCK_SKEW,
    }
)
MAX_RESEALS = 2
RATE_LIMIT_PAUSE_SECONDS = 1.0

Key = tuple[uuid.UUID, bytes]
# (conversation, message id, payload) -> a new envelope for the same message, wrapped to the
# recipients' current verified devices.
Resealer = Callable[[uuid.UUID, bytes, bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Sent:
    """The server durably stored the message and queued it for its recipients."""

    conversation: ConversationId
    message_id: MessageId
    received_ms: int


@dataclass
class _Item:
    pending: PendingSend
    future: asyncio.Future[Sent] | None  # None: restored from an earlier run
    generation: int  # durable once the writer saved this generation
    payload: bytes | None = None  # kept in memory so the envelope can be sealed again
    needs_reseal: bool = False
    reseals: int = 0
    wired_at: float = 0.0


class Outbox:
    def __init__(
        self,
        state: KeystoreState,
        writer: StateWriter,
        *,
        rate_per_second: float,
        burst: int,
        window: int,
        notify: Callable[[Event], None],
        resealer: Resealer,
    ) -> None:
        self.state = state
        self.writer = writer
        self.window = window
        self.notify = notify
        self.resealer = resealer
        self._items: dict[Key, _Item] = {
            (p.conversation, p.message_id): _Item(p, None, 0) for p in state.outbox
        }
        self._unsent: collections.deque[Key] = collections.deque()
        self._wire: collections.deque[Key] = collections.deque()
        self._changed = asyncio.Event()
        self._attached = False
        self._limited = 0  # sends refused with rate_limited on this socket
        self._rate = rate_per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, pending: PendingSend, payload: bytes) -> asyncio.Future[Sent]:
        """Queue a sealed message (the caller already recorded its chain step)."""
        self.state.outbox.append(pending)
        future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        key = (pending.conversation, pending.message_id)
        self._items[key] = _Item(pending, future, self.writer.mark(), payload)
        if self._attached:
            self._unsent.append(key)
            self._changed.set()
        return future

    # -- the socket's life --------------------------------------------------------------------

    def attach(self) -> None:
        """A socket attached: everything not accepted yet goes (again), in order."""
        self._attached = True
        self._limited = 0
        self._wire.clear()
        self._unsent = collections.deque(self._items)
        self._changed.set()

    def detach(self) -> None:
        self._attached = False
        self._wire.clear()
        self._unsent.clear()

    def oldest_unanswered_seconds(self) -> float:
        if not self._wire:
            return 0.0
        item = self._items.get(self._wire[0])
        return 0.0 if item is None else time.monotonic() - item.wired_at

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Put queued envelopes on the wire in order; runs while one socket is attached."""
        while True:
            while not self._unsent or len(self._wire) >= self.window or self._limited:
                self._changed.clear()
                await self._changed.wait()
            key = self._unsent[0]
            item = self._items.get(key)
            if item is None:
                self._unsent.popleft()
                continue
            await self.writer.durable(item.generation)
            if item.needs_reseal:
                try:
                    await self._reseal(item)
                except ConnectionLost:
                    await asyncio.sleep(1.0)  # the server is away; seal again when it is back
                except ClientError as error:
                    self._unsent.popleft()
                    self._finish(key, error=error)
                continue
            await self._take_token()
            self._unsent.popleft()
            self._wire.append(key)
            item.wired_at = time.monotonic()
            await send(frames.encode_client(frames.Send(item.pending.envelope)))

    def fail_waiting(self, error: ClientError) -> None:
        """Fail the callers waiting on sends; the sends stay queued for the next run."""
        for item in self._items.values():
            if item.future is not None and not item.future.done():
                item.future.set_exception(error)
                item.future = None

    # -- replies ------------------------------------------------------------------------------

    def on_reply(self, frame: dict[str, Any]) -> float | None:
        """Match an `accepted` or `error` frame to its send. Return a delay after which the
        connection should start over, or None to carry on."""
        if frame["type"] == "accepted":
            self._accepted(frame)
            return self._after_rate_limit() if self._limited else None
        try:
            code = ErrorCode(str(frame.get("code")))
        except ValueError:
            return None
        if code not in RETRYABLE | STALE_RECIPIENTS | FINAL or not self._wire:
            return None  # not about a send (an ack refused, say)
        if code == ErrorCode.RATE_LIMITED:
            # The server answers this at once, ahead of earlier sends' replies (not in order), so
            # it names no send: stop sending, let the sends it did take be accepted, then start
            # over with the rest.
            self._limited += 1
            return self._after_rate_limit()
        key = self._wire.popleft()
        self._changed.set()
        item = self._items.get(key)
        if item is None:
            return None
        message = str(frame.get("message", code))
        if code in RETRYABLE:
            return 0.2
        if code in STALE_RECIPIENTS and item.payload is not None and item.reseals < MAX_RESEALS:
            item.needs_reseal = True
            return 0.0
        self._finish(key, error=SendRefused(f"server refused the message: {message}", code=code))
        return None

    def _after_rate_limit(self) -> float | None:
        """Once only the refused sends are unanswered, start over after a pause."""
        return RATE_LIMIT_PAUSE_SECONDS if len(self._wire) <= self._limited else None

    def _accepted(self, frame: dict[str, Any]) -> None:
        try:
            conversation = uuid.UUID(str(frame["conversation"]))
            message_id = bytes.fromhex(str(frame["message"]))
            received_ms = int(frame["received_ms"])
        except (KeyError, ValueError):
            return
        key = (conversation, message_id)
        if self._wire and self._wire[0] == key:
            self._wire.popleft()
        elif key in self._wire:
            self._wire.remove(key)
        self._changed.set()
        sent = Sent(ConversationId(conversation), MessageId(message_id.hex()), received_ms)
        self._finish(key, sent=sent)

    def _finish(
        self, key: Key, *, sent: Sent | None = None, error: ClientError | None = None
    ) -> None:
        item = self._items.pop(key, None)
        if item is None:
            return  # a second answer for a retried send
        self.state.outbox.remove(item.pending)
        self.writer.mark()
        future = item.future
        if future is not None and not future.done():
            if sent is not None:
                future.set_result(sent)
            elif error is not None:
                future.set_exception(error)
        elif error is not None:
            self.notify(
                SendFailed(
                    ConversationId(key[0]),
                    MessageId(key[1].hex()),
                    str(getattr(error, "code", type(error).__name__)),
                    str(error),
                )
            )

    async def _reseal(self, item: _Item) -> None:
        assert item.payload is not None
        item.reseals += 1
        item.pending.envelope = await self.resealer(
            item.pending.conversation, item.pending.message_id, item.payload
        )
        item.needs_reseal = False
        item.generation = self.writer.mark()

    async def _take_token(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)
