"""The WebSocket endpoint: a thin adapter between a socket and the services.

One `SocketSession` per connection runs three tasks: the reader (frames in, in order), the
sender (the only task that writes to the socket, draining a byte-bounded Outbox) and, once a
device is attached, the pump (backlog from the device's cursor, then live pushes). Replies to
`send` frames go out in the order the sends arrived, while the reader keeps reading, so one
connection can have many sends in the same group commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import uuid
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode, ProtocolError
from securemsg.protocol.state import State, check_allowed
from securemsg.server.delivery import Accepted, AttachError
from securemsg.server.login import LoginError, Principal
from securemsg.server.outbox import Outbox
from securemsg.server.ratelimit import RateLimiter
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


async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
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
    def __init__(self, websocket: WebSocket, services: Services, address: str) -> None:
        self.ws = websocket
        self.services = services
        self.settings = services.settings
        self.address = address
        self.limits = frames.FrameLimits(
            max_frame_bytes=self.settings.max_frame_bytes,
            max_json_depth=self.settings.max_json_depth,
        )
        self.state = State.AWAITING_AUTH
        self.principal: Principal | None = None
        self.account_id: uuid.UUID | None = None
        self.session_id: uuid.UUID | None = None
        self.device_id: uuid.UUID | None = None
        self.device: Device | None = None
        self.challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self.outbox = Outbox(self.settings.outbound_queue_bytes)
        self._unauth_slot = True
        self._closing: tuple[CloseCode, ErrorCode, str] | None = None
        self._peer_gone = False
        self._replies: collections.deque[asyncio.Future[Accepted]] = collections.deque()
        self._reply_ready = asyncio.Event()
        self._inflight = asyncio.Semaphore(MAX_INFLIGHT_SENDS)
        self._send_limiter = RateLimiter(
            capacity=self.settings.send_burst,
            per_seconds=self.settings.send_burst / max(self.settings.send_rate_per_second, 1e-9),
        )
        # delivery pump state
        self._last_sent = 0
        self._live = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

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
        self.account_id = principal.account_id
        self.session_id = principal.session_id
        self.state = State.READY
        self.outbox.offer(
            frames.encode(
                "ready",
                account=str(principal.account_id),
                username=principal.username,
                role=principal.role.value,
                challenge=frames.b64(self.challenge),
            )
        )
        sender = asyncio.create_task(self._sender(), name="ws-sender")
        replier = asyncio.create_task(self._replier(), name="ws-replier")
        self._tasks += [sender, replier]
        try:
            await self._reader()
        finally:
            self.outbox.close()
            for task in self._tasks:
                if task is not sender:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(sender, timeout=5)
            for task in self._tasks:
                task.cancel()

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
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=idle)
            except TimeoutError:
                self.close_soon(
                    CloseCode.IDLE_TIMEOUT, ErrorCode.IDLE_TIMEOUT, f"no frame for {idle:g} seconds"
                )
                return
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

    async def _handle(self, frame: frames.ClientFrame) -> None:
        if isinstance(frame, frames.Ping):
            self.outbox.offer(frames.encode("pong"))
        elif isinstance(frame, frames.Attach):
            await self._attach(frame)
        elif isinstance(frame, frames.Send):
            await self._send(frame)
        elif isinstance(frame, frames.Ack):
            if frame.seq > self._last_sent:
                raise ProtocolError(
                    f"ack of {frame.seq} is beyond the last delivered sequence {self._last_sent}",
                    code=ErrorCode.BAD_FRAME,
                )
            assert self.device_id is not None
            self.services.delivery.acknowledge(self.device_id, frame.seq)

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
        self._tasks.append(asyncio.create_task(self._pump(), name="ws-pump"))

    async def _send(self, frame: frames.Send) -> None:
        assert self.device is not None and self.account_id is not None
        await self._inflight.acquire()
        if not self._send_limiter.take(None, self.services.clock.now_ms()):
            # Answered by the replier like every other send, so replies stay in send order
            # (docs/protocol.md §3.3); raising here would put the error ahead of earlier replies.
            refused: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
            refused.set_exception(
                ProtocolError("sending too fast; slow down", code=ErrorCode.RATE_LIMITED)
            )
            self._replies.append(refused)
            self._reply_ready.set()
            return
        task = asyncio.create_task(
            self.services.delivery.submit(
                frame.envelope, account_id=self.account_id, device=self.device
            )
        )
        self._replies.append(task)
        self._reply_ready.set()

    async def _replier(self) -> None:
        """Answer sends in the order they arrived, as each one commits or fails."""
        while True:
            while not self._replies:
                self._reply_ready.clear()
                await self._reply_ready.wait()
            task = self._replies[0]
            try:
                accepted = await asyncio.shield(task)
                reply = frames.encode(
                    "accepted",
                    conversation=str(accepted.conversation_id),
                    message=accepted.message_id.hex(),
                    received_ms=accepted.received_ms,
                )
            except ProtocolError as exc:
                reply = frames.error_frame(exc.code, exc.message)
            self._replies.popleft()
            self._inflight.release()
            await self.outbox.put(reply)

    # -- sending --------------------------------------------------------------------------

    async def _sender(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                if frame is None:
                    break
                await self.ws.send_text(frame)
            if self._closing is not None and not self._peer_gone:
                code, error, message = self._closing
                await _close(self.ws, code, error, message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    # -- delivery pump --------------------------------------------------------------------

    def offer(self, seq: int, data: bytes) -> None:
        """A committed delivery for this device: push it now if it is the next one."""
        if self._live and seq == self._last_sent + 1:
            if not self.outbox.offer(frames.encode("deliver", seq=seq, envelope=frames.b64(data))):
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
        self._live = False
        self._wake.set()

    async def _pump(self) -> None:
        assert self.device_id is not None
        page = self.settings.backlog_page_envelopes
        caught_up = False
        while self._closing is None:
            self._wake.clear()
            try:
                queue = await self.services.delivery.queue(
                    self.device_id, after=self._last_sent, limit=page
                )
            except StorageError:
                await asyncio.sleep(1.0)
                continue
            if queue.expired_seq > self._last_sent:
                await self.outbox.put(
                    frames.encode("gap", first=self._last_sent + 1, last=queue.expired_seq)
                )
                self._last_sent = queue.expired_seq
            for item in queue.deliveries:
                if item.seq > self._last_sent:
                    await self.outbox.put(
                        frames.encode("deliver", seq=item.seq, envelope=frames.b64(item.data))
                    )
                    self._last_sent = item.seq
            if len(queue.deliveries) >= page:
                continue
            if not caught_up:
                caught_up = True
                await self.outbox.put(frames.encode("caught_up", seq=self._last_sent))
            if self._wake.is_set():
                continue
            self._live = True
            await self._wake.wait()


def _payload(message: object) -> str | bytes:
    assert isinstance(message, dict)
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return bytes(data) if data is not None else b""
