"""The WebSocket endpoint: a thin adapter between a socket and the services.

One `SocketSession` per connection: the reader (frames in, in order) runs in the connection's
task; the sender (the only task that writes to the socket, draining a byte-bounded Outbox) runs
while there is something to send; once a device is attached, the pump reads its queue (backlog
from the cursor, wake-ups) until it is live, and live pushes then go straight to the Outbox.
Replies to `send` frames go out in the order the sends arrived (the replier), while the reader
keeps reading, so one connection can have many sends in the same group commit. An idle socket
holds no task of its own and no asyncio.Event: memory per socket is what bounds how many a
process can hold (DESIGN §11).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode, ProtocolError
from securemsg.protocol.state import State, check_allowed
from securemsg.server.delivery import Accepted, AttachError
from securemsg.server.login import LoginError, Principal
from securemsg.server.outbox import Outbox
from securemsg.server.ratelimit import RateLimiter
from securemsg.storage.accounts import Role
from securemsg.storage.devices import Device
from securemsg.storage.errors import StorageError

if TYPE_CHECKING:
    from securemsg.server.app import Services

log = logging.getLogger("securemsg.websocket")

CHALLENGE_BYTES = 32
MAX_INFLIGHT_SENDS = 256


def client_address(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"


def origin_allowed(websocket: WebSocket, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser), a listed origin, or the server's own origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    if origin in allowed:
        return True
    host = websocket.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def websocket_endpoint(websocket: WebSocket, services: Services) -> None:
    settings = services.settings
    address = client_address(websocket)
    if not origin_allowed(websocket, settings.allowed_origins):
        log.info("websocket from %s refused: origin not allowed", address)
        await websocket.close(code=CloseCode.FORBIDDEN)  # before accept: HTTP 403
        return
    if not services.hub.open_unauthenticated(
        address, settings.max_unauthenticated_sockets_per_address
    ):
        await websocket.accept()
        await _close(
            websocket,
            CloseCode.RATE_LIMITED,
            ErrorCode.TOO_MANY_SOCKETS,
            "too many unauthenticated connections from this address",
        )
        return
    session = SocketSession(websocket, services, address)
    try:
        await websocket.accept()
        await session.run()
    except WebSocketDisconnect:
        pass
    finally:
        session.finish()


async def _close(websocket: WebSocket, code: CloseCode, error: ErrorCode, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(frames.error_frame(error, message))
        await websocket.close(code=code, reason=error.value)


class SocketSession:
    """One connection. Small while idle: tasks, queues and limiters exist only while needed.

    The reader runs in the connection's own task. The sender (the only writer to the socket) is
    started when a frame arrives in the empty outbox and ends when the outbox is empty again;
    the pump runs while the device's queue has to be read (backlog, wake-ups) and ends once it
    is live; the replier, the reply queue and the send limiter are made on the first `send`.
    The idle timeout is one timer per socket, re-armed only when it fires.
    """

    __slots__ = (
        "_audited",
        "_caught_up",
        "_closing",
        "_idle_fired",
        "_idle_timer",
        "_inflight",
        "_inflight_room",
        "_last_sent",
        "_live",
        "_peer_gone",
        "_pump_task",
        "_receiving_since",
        "_replier_task",
        "_replies",
        "_reply_ready",
        "_rewake",
        "_send_failed",
        "_send_limiter",
        "_sender_task",
        "_task",
        "_unauth_slot",
        "account_id",
        "address",
        "challenge",
        "device",
        "device_id",
        "limits",
        "outbox",
        "principal",
        "services",
        "session_id",
        "settings",
        "state",
        "ws",
    )

    def __init__(self, websocket: WebSocket, services: Services, address: str) -> None:
        self.ws = websocket
        self.services = services
        self.settings = services.settings
        self.address = address
        self.limits = _frame_limits(self.settings.max_frame_bytes, self.settings.max_json_depth)
        self.state = State.AWAITING_AUTH
        self.principal: Principal | None = None
        self._audited = False  # supervisors: every read is written to the audit log first
        self.account_id: uuid.UUID | None = None
        self.session_id: uuid.UUID | None = None
        self.device_id: uuid.UUID | None = None
        self.device: Device | None = None
        self.challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self.outbox = Outbox(self.settings.outbound_queue_bytes, on_ready=self._start_sender)
        self._unauth_slot = True
        self._closing: tuple[CloseCode, ErrorCode, str] | None = None
        self._peer_gone = False
        self._task: asyncio.Task[Any] | None = None  # the connection's task (runs the reader)
        self._sender_task: asyncio.Task[None] | None = None
        self._send_failed = False
        # sends (made on the first one)
        self._replies: collections.deque[asyncio.Future[Accepted]] | None = None
        self._reply_ready: asyncio.Future[None] | None = None
        self._replier_task: asyncio.Task[None] | None = None
        self._inflight = 0
        self._inflight_room: asyncio.Future[None] | None = None
        self._send_limiter: RateLimiter | None = None
        # idle timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_fired = False
        self._receiving_since: float | None = None
        # delivery pump state
        self._last_sent = 0
        self._live = False
        self._caught_up = False
        self._rewake = False
        self._pump_task: asyncio.Task[None] | None = None

    # -- the connection's life ------------------------------------------------------------

    async def run(self) -> None:
        principal = await self._authenticate()
        if principal is None:
            return
        self.services.hub.release_unauthenticated(self.address)
        self._unauth_slot = False
        if not self.services.hub.add_authenticated(
            self, principal.account_id, self.settings.max_sockets_per_account
        ):
            await _close(
                self.ws,
                CloseCode.RATE_LIMITED,
                ErrorCode.TOO_MANY_SOCKETS,
                "too many open connections for this account",
            )
            return
        self.principal = principal
        self._audited = principal.role is Role.SUPERVISOR
        self.account_id = principal.account_id
        self.session_id = principal.session_id
        self.state = State.READY
        self._task = asyncio.current_task()
        self.outbox.offer(
            frames.encode(
                "ready",
                account=str(principal.account_id),
                username=principal.username,
                role=principal.role.value,
                challenge=frames.b64(self.challenge),
            )
        )
        try:
            await self._reader()
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self.outbox.close()  # starts a sender for the close frame if one is due
            for task in (self._replier_task, self._pump_task):
                if task is not None:
                    task.cancel()
            for reply in self._replies or ():
                reply.add_done_callback(_retrieve)  # unanswered now: don't log its outcome
            sender = self._sender_task
            if sender is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(sender), timeout=5)
                sender.cancel()

    def finish(self) -> None:
        if self._unauth_slot:
            self.services.hub.release_unauthenticated(self.address)
            self._unauth_slot = False
        self.services.hub.remove(self)

    def close_soon(self, code: CloseCode, error: ErrorCode, message: str) -> None:
        """Close from any task: queued frames are dropped (cursors cover them)."""
        if self._closing is not None:
            return
        self._closing = (code, error, message)
        self.outbox.close()

    # -- authentication -------------------------------------------------------------------

    async def _authenticate(self) -> Principal | None:
        now = self.services.clock.now_ms
        header = self.ws.headers.get("authorization")
        token: str | None = None
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value:
                await _close(
                    self.ws,
                    CloseCode.AUTH_FAILED,
                    ErrorCode.AUTH_FAILED,
                    "Authorization header must be 'Bearer <token>'",
                )
                return None
            token = value.strip()
        else:
            try:
                message = await asyncio.wait_for(
                    self.ws.receive(), timeout=self.settings.auth_deadline_seconds
                )
            except TimeoutError:
                await _close(
                    self.ws,
                    CloseCode.AUTH_TIMEOUT,
                    ErrorCode.AUTH_TIMEOUT,
                    "no auth frame within the deadline",
                )
                return None
            if message["type"] == "websocket.disconnect":
                return None
            try:
                frame = frames.parse_frame(_payload(message), self.limits)
                check_allowed(self.state, frame.type)
            except ProtocolError as exc:
                await _close(self.ws, exc.close or CloseCode.PROTOCOL_ERROR, exc.code, exc.message)
                return None
            assert isinstance(frame, frames.Auth)
            token = frame.token
        try:
            return await self.services.login.authenticate(token, now_ms=now())
        except LoginError as exc:
            await _close(self.ws, CloseCode.AUTH_FAILED, exc.code, str(exc))
        except StorageError:
            await _close(
                self.ws,
                CloseCode.TRY_AGAIN_LATER,
                ErrorCode.UNAVAILABLE,
                "server unavailable, try again",
            )
        return None

    # -- reading --------------------------------------------------------------------------

    async def _reader(self) -> None:
        idle = self.settings.idle_timeout_seconds
        loop = asyncio.get_running_loop()
        receive = self.ws.receive
        while True:
            # The idle timeout counts from here while we wait for a frame (as a wait_for around
            # each receive would, without a task and a timer per frame): see `_idle_check`.
            self._receiving_since = loop.time()
            if self._idle_timer is None:
                self._idle_timer = loop.call_at(self._receiving_since + idle, self._idle_check)
            try:
                message = await receive()
            except asyncio.CancelledError:
                task = self._task
                if not self._idle_fired or task is None or task.uncancel() > 0:
                    raise
                self.close_soon(
                    CloseCode.IDLE_TIMEOUT, ErrorCode.IDLE_TIMEOUT, f"no frame for {idle:g} seconds"
                )
                return
            finally:
                self._receiving_since = None
            if message["type"] == "websocket.disconnect":
                self._peer_gone = True
                self.outbox.close()
                return
            if self._closing is not None:
                continue  # closing: nothing more is processed
            try:
                frame = frames.parse_frame(_payload(message), self.limits)
                check_allowed(self.state, frame.type)
                await self._handle(frame)
            except ProtocolError as exc:
                if exc.close is not None:
                    self.close_soon(exc.close, exc.code, exc.message)
                    return
                self.outbox.offer(frames.error_frame(exc.code, exc.message))

    def _idle_check(self) -> None:
        """The idle timer: fire if the reader has waited `idle` seconds, else re-arm."""
        loop = asyncio.get_running_loop()
        idle = self.settings.idle_timeout_seconds
        since = self._receiving_since
        now = loop.time()
        if since is None:  # handling a frame: that time does not count
            self._idle_timer = loop.call_at(now + idle, self._idle_check)
        elif now - since < idle:
            self._idle_timer = loop.call_at(since + idle, self._idle_check)
        else:
            self._idle_timer = None
            if self._task is not None and not self._idle_fired:
                self._idle_fired = True
                self._task.cancel()

    async def _handle(self, frame: frames.ClientFrame) -> None:
        if isinstance(frame, frames.Send):
            await self._send(frame)
        elif isinstance(frame, frames.Ack):
            if frame.seq > self._last_sent:
                raise ProtocolError(
                    f"ack of {frame.seq} is beyond the last delivered sequence {self._last_sent}",
                    code=ErrorCode.BAD_FRAME,
                )
            assert self.device_id is not None
            self.services.delivery.acknowledge(self.device_id, frame.seq)
        elif isinstance(frame, frames.Ping):
            self.outbox.offer(frames.encode("pong"))
        elif isinstance(frame, frames.Attach):
            await self._attach(frame)

    async def _attach(self, frame: frames.Attach) -> None:
        assert self.account_id is not None
        try:
            device = await self.services.delivery.attach(
                account_id=self.account_id,
                device_id=frame.device,
                challenge=self.challenge,
                signature=frame.signature,
            )
        except AttachError as exc:
            raise ProtocolError(str(exc), code=exc.code) from None
        except StorageError:
            raise ProtocolError(
                "server unavailable, try again", code=ErrorCode.UNAVAILABLE
            ) from None
        self.device = device
        self.device_id = device.id
        self.state = State.ATTACHED
        self._last_sent = device.acked_seq if frame.after is None else frame.after
        self.services.hub.attach(self, device.id)
        self.outbox.offer(frames.encode("attached", device=str(device.id), acked=device.acked_seq))
        self.wake()

    # -- sends and their replies ----------------------------------------------------------

    async def _send(self, frame: frames.Send) -> None:
        assert self.device is not None and self.account_id is not None
        if self._replies is None:
            self._replies = collections.deque()
            self._send_limiter = RateLimiter(
                capacity=self.settings.send_burst,
                per_seconds=self.settings.send_burst
                / max(self.settings.send_rate_per_second, 1e-9),
            )
            self._replier_task = asyncio.create_task(self._replier(), name="ws-replier")
        while self._inflight >= MAX_INFLIGHT_SENDS:
            if self._inflight_room is None:
                self._inflight_room = asyncio.get_running_loop().create_future()
            await self._inflight_room
        self._inflight += 1
        assert self._send_limiter is not None
        reply: asyncio.Future[Accepted]
        if not self._send_limiter.take(None, self.services.clock.now_ms()):
            # Answered by the replier like every other send, so replies stay in send order
            # (docs/protocol.md §3.3); raising here would put the error ahead of earlier replies.
            reply = _refused(
                ProtocolError("sending too fast; slow down", code=ErrorCode.RATE_LIMITED)
            )
        else:
            try:
                reply = self.services.delivery.enqueue(
                    frame.envelope, account_id=self.account_id, device=self.device
                )
            except ProtocolError as exc:
                reply = _refused(exc)
            except Exception:
                log.exception("send refused: unexpected error")
                reply = _refused(
                    ProtocolError("server unavailable, try again", code=ErrorCode.UNAVAILABLE)
                )
        self._replies.append(reply)
        ready = self._reply_ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def _replier(self) -> None:
        """Answer sends in the order they arrived, as each one commits or fails."""
        replies = self._replies
        assert replies is not None
        loop = asyncio.get_running_loop()
        while True:
            if not replies:
                self._reply_ready = loop.create_future()
                await self._reply_ready
                self._reply_ready = None
                continue
            future = replies[0]
            if not future.done():
                with contextlib.suppress(Exception):  # inspected below
                    await future
            error = future.exception()
            if error is None:
                accepted = future.result()
                reply = frames.accepted_frame(
                    accepted.conversation_id, accepted.message_id, accepted.received_ms
                )
            elif isinstance(error, ProtocolError):
                reply = frames.error_frame(error.code, error.message)
            else:
                raise error
            replies.popleft()
            self._inflight -= 1
            room = self._inflight_room
            if room is not None:
                self._inflight_room = None
                if not room.done():
                    room.set_result(None)
            await self.outbox.put(reply)

    # -- writing to the socket ------------------------------------------------------------

    def _start_sender(self) -> None:
        """The outbox got a frame (or closed): make sure a sender is draining it."""
        if self._sender_task is None and not self._send_failed:
            self._sender_task = asyncio.get_running_loop().create_task(
                self._sender(), name="ws-sender"
            )

    async def _sender(self) -> None:
        outbox = self.outbox
        send = self.ws.send_text
        try:
            while True:
                frame = outbox.pop()
                if frame is None:
                    break
                await send(frame)
            if outbox.closed and self._closing is not None and not self._peer_gone:
                self._send_failed = True  # the close frame is the last thing this socket sends
                code, error, message = self._closing
                await _close(self.ws, code, error, message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._send_failed = True
        finally:
            self._sender_task = None

    # -- delivery pump --------------------------------------------------------------------

    def offer(self, seq: int, data: bytes, kind: str) -> None:
        """A committed delivery for this device: push it now if it is the next one.

        A supervisor's deliveries never take this shortcut: each read goes through the audited
        path in the pump (no audit entry, no data).
        """
        if self._live and seq == self._last_sent + 1 and not self._audited:
            if not self.outbox.offer(frames.deliver_frame(seq, data, kind)):
                self.close_soon(
                    CloseCode.SLOW_READER,
                    ErrorCode.SLOW_READER,
                    "too far behind; reconnect to resume from your cursor",
                )
                return
            self._last_sent = seq
        elif seq > self._last_sent:
            self.wake()

    def wake(self) -> None:
        """Read the device's queue from the cursor (start the pump, or make it go round again)."""
        self._live = False
        self._rewake = True
        if self._pump_task is None and self._closing is None and self.device_id is not None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="ws-pump")

    async def _put_backlog(self, frame: str) -> bool:
        """Queue a backlog frame; a reader that makes no room for `slow_reader_seconds` is cut
        off like a live one (4503) and resumes from its cursor when it reconnects."""
        try:
            await asyncio.wait_for(
                self.outbox.put(frame), timeout=self.settings.slow_reader_seconds
            )
        except TimeoutError:
            self.close_soon(
                CloseCode.SLOW_READER,
                ErrorCode.SLOW_READER,
                "too far behind; reconnect to resume from your cursor",
            )
            return False
        return True

    async def _pump(self) -> None:
        """Send the queue from the cursor until caught up, then hand over to `offer` and end."""
        assert self.device_id is not None
        page = self.settings.backlog_page_envelopes
        try:
            while self._closing is None:
                self._rewake = False
                try:
                    if self._audited:
                        assert self.principal is not None
                        queue = await self.services.delivery.supervisor_queue(
                            self.principal, self.device_id, after=self._last_sent, limit=page
                        )
                    else:
                        queue = await self.services.delivery.queue(
                            self.device_id, after=self._last_sent, limit=page
                        )
                except StorageError:
                    await asyncio.sleep(1.0)
                    continue
                if queue.expired_seq > self._last_sent:
                    gap = frames.encode("gap", first=self._last_sent + 1, last=queue.expired_seq)
                    if not await self._put_backlog(gap):
                        return
                    self._last_sent = queue.expired_seq
                for item in queue.deliveries:
                    if item.seq > self._last_sent:
                        frame = frames.deliver_frame(item.seq, item.data, item.kind)
                        if not await self._put_backlog(frame):
                            return
                        self._last_sent = item.seq
                if len(queue.deliveries) >= page:
                    continue
                if not self._caught_up:
                    self._caught_up = True
                    await self.outbox.put(frames.encode("caught_up", seq=self._last_sent))
                if self._rewake:
                    continue
                self._live = True
                return
        finally:
            self._pump_task = None


def deliver_frame(seq: int, data: bytes, kind: str) -> str:
    return frames.deliver_frame(seq, data, kind)


@functools.lru_cache(maxsize=8)
def _frame_limits(max_frame_bytes: int, max_json_depth: int) -> frames.FrameLimits:
    """One shared (frozen) FrameLimits per setting, not one per socket."""
    return frames.FrameLimits(max_frame_bytes=max_frame_bytes, max_json_depth=max_json_depth)


def _retrieve(future: asyncio.Future[Accepted]) -> None:
    if not future.cancelled():
        future.exception()


def _refused(error: Exception) -> asyncio.Future[Accepted]:
    future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def _payload(message: object) -> str | bytes:
    assert isinstance(message, dict)
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return bytes(data) if data is not None else b""
