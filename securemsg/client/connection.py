"""The WebSocket to the server: authenticate, attach, read frames, and reconnect when it drops.

`Connection.run` keeps one attached socket alive for as long as the client is open. Every drop
that can heal (network, server restart, `slow_reader`, idle timeout) reconnects with exponential
backoff and jitter and resumes after the last delivery already queued here; closes that cannot
heal (the session ended, this device was revoked or displaced) end the loop with a `ClientError`
that the application sees from `events()` and from waiting sends. This is the only module that
imports `websockets`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from securemsg.client.errors import (
    AuthenticationError,
    ClientError,
    DeviceRevoked,
    Displaced,
)
from securemsg.client.events import CaughtUp, Gap
from securemsg.client.inbox import Delivery, Inbound, Terminal
from securemsg.client.keystore import KeystoreState
from securemsg.client.outbox import Outbox
from securemsg.crypto.keys import DeviceKeys
from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode, FrameError

log = logging.getLogger("securemsg.client")

TICK_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    open_timeout_seconds: float = 10.0
    reconnect_initial_seconds: float = 0.2
    reconnect_max_seconds: float = 30.0
    reply_timeout_seconds: float = 30.0  # a send unanswered this long: start over
    keepalive_seconds: float = 60.0  # send a `ping` frame when idle (server idle timeout: 300 s)
    max_frame_bytes: int = 4 * 131072


class _Restart(Exception):  # control flow; never leaves this module
    """Close this socket and reconnect after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay


class Connection:
    def __init__(
        self,
        url: str,
        *,
        token: Callable[[], str | None],
        state: KeystoreState,
        device_keys: DeviceKeys,
        inbound: Inbound,
        outbox: Outbox,
        options: ConnectionOptions,
    ) -> None:
        self.url = url
        self.token = token
        self.state = state
        self.device_keys = device_keys
        self.inbound = inbound
        self.outbox = outbox
        self.options = options
        self.limits = frames.FrameLimits(max_frame_bytes=options.max_frame_bytes)
        inbound.on_drained = self.resume
        self.attached = asyncio.Event()
        self.error: ClientError | None = None  # set when the loop ended for good
        self.reconnects = 0  # attaches after the first one
        self._attached_before = False
        self._ws: ClientConnection | None = None
        self._queued = state.cursor  # highest delivery seq handed to the inbound queue
        self._acked = 0  # highest seq acknowledged on the current socket
        self._last_frame_sent = time.monotonic()
        self._helper_error: ClientError | None = None
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.options.reconnect_initial_seconds
        while not self._stopping:
            delay: float | None = None
            try:
                await self._session()
            except _Restart as restart:
                delay = restart.delay
            except ClientError as error:
                self._stop(error)
                return
            except ConnectionClosed as closed:
                terminal = _terminal_close(closed)
                if terminal is not None:
                    self._stop(terminal)
                    return
            except InvalidStatus as error:
                status = error.response.status_code
                if status in (401, 403, 404):
                    self._stop(ClientError(f"websocket handshake refused with HTTP {status}"))
                    return
            except InvalidURI as error:
                self._stop(ClientError(f"bad websocket url: {error}"))
                return
            except (OSError, TimeoutError, InvalidHandshake, FrameError) as error:
                log.debug("connection attempt failed: %s", error)
            finally:
                if self.attached.is_set():
                    backoff = self.options.reconnect_initial_seconds
                self.attached.clear()
                self.outbox.detach()
                self._ws = None
            if self._stopping:
                return
            if delay is None:
                delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, self.options.reconnect_max_seconds)
            await asyncio.sleep(delay)

    def _stop(self, error: ClientError) -> None:
        self.error = error
        self.outbox.fail_waiting(error)
        self.inbound.put(Terminal(error))

    async def _session(self) -> None:
        token = self.token()
        if token is None:
            raise AuthenticationError("not logged in")
        async with connect(
            self.url,
            compression=None,
            open_timeout=self.options.open_timeout_seconds,
            max_size=self.options.max_frame_bytes,
            close_timeout=2,
            user_agent_header="securemsg-python-sdk",
        ) as ws:
            self._ws = ws
            await self._send(frames.encode_client(frames.Auth(token)))
            ready = await self._expect(ws, "ready")
            challenge = _b64(ready.get("challenge"))
            device = self.state.device_id
            signature = self.device_keys.sign(
                frames.ATTACH_PURPOSE, challenge + device.bytes
            )  # == attach_message(challenge, device), purpose-bound
            await self._send(
                frames.encode_client(frames.Attach(device, signature, after=self._queued))
            )
            await self._expect(ws, "attached")
            self._acked = 0
            if self._attached_before:
                self.reconnects += 1
            self._attached_before = True
            self.attached.set()
            self.outbox.attach()
            self._helper_error = None
            tasks = [
                asyncio.create_task(self._guard(ws, self.outbox.pump(self._send)), name="sdk-pump"),
                asyncio.create_task(self._guard(ws, self._tick(ws)), name="sdk-tick"),
            ]
            try:
                await self._read(ws)
            except _Restart:
                await ws.close()  # a normal close (1000), not 1011 from leaving with an error
                raise
            except ConnectionClosed:
                if self._helper_error is not None:
                    raise self._helper_error from None
                raise
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, ws: ClientConnection, work: Coroutine[Any, Any, None]) -> None:
        """Run a helper of the socket; if it fails, close the socket and report why."""
        try:
            await work
        except ConnectionClosed:
            pass
        except ClientError as error:
            self._helper_error = error
            await ws.close()

    async def _expect(self, ws: ClientConnection, kind: str) -> dict[str, Any]:
        frame = await self._recv(ws)
        if frame["type"] == kind:
            return frame
        if frame["type"] == "error":
            code = frame.get("code")
            message = str(frame.get("message", ""))
            if code in (ErrorCode.BAD_DEVICE.value, ErrorCode.WRONG_SENDER.value):
                raise DeviceRevoked(f"the server refused this device: {message}")
            if code == ErrorCode.AUTH_FAILED.value:
                raise AuthenticationError(f"the server refused the session: {message}")
            if code == ErrorCode.UNAVAILABLE.value:
                raise _Restart(1.0)
            # Any other refusal before attaching is followed by a close; read it.
            await ws.wait_closed()
            raise ClientError(f"the server refused to attach: {message} ({code})")
        raise ClientError(f"expected a {kind} frame, got {frame['type']}")

    async def _recv(self, ws: ClientConnection) -> dict[str, Any]:
        data = await ws.recv()
        return frames.parse_server_frame(data, self.limits)

    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionClosed(None, None)
        self._last_frame_sent = time.monotonic()
        await ws.send(text)

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            frame = await self._recv(ws)
            kind = frame["type"]
            if kind == "deliver":
                self._deliver(frame)
            elif kind in ("accepted", "error"):
                delay = self.outbox.on_reply(frame)
                if delay is not None:
                    raise _Restart(delay)
            elif self.inbound.overflowed:
                continue  # markers come again after the resume
            elif kind == "caught_up":
                self.inbound.put(CaughtUp(_uint(frame, "seq")))
            elif kind == "gap":
                first, last = _uint(frame, "first"), _uint(frame, "last")
                if last > self._queued:
                    self.inbound.put(Gap(max(first, self._queued + 1), last))
                    self._queued = last
            # pong, and frame types from a newer server, need nothing

    def _deliver(self, frame: dict[str, Any]) -> None:
        seq = _uint(frame, "seq")
        if seq <= self._queued or self.inbound.overflowed:
            return  # already queued, or no room: fetched again after the next resume
        try:
            envelope: bytes | None = frames.decode_b64(str(frame.get("envelope")), what="envelope")
        except FrameError:
            envelope = None
        if not self.inbound.has_room():
            return
        if seq > self._queued + 1:
            # The server skipped sequence numbers without a `gap` frame: report it as one.
            self.inbound.put(Gap(self._queued + 1, seq - 1))
        kind = frame.get("kind")  # a system event (docs/protocol.md §3.4); absent: an envelope
        system = kind if isinstance(kind, str) and kind != "message" else None
        self.inbound.put_delivery(Delivery(seq, envelope, system))
        self._queued = seq

    def resume(self) -> None:
        """Start the socket over so the server sends again what the full queue refused."""
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(ws.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _tick(self, ws: ClientConnection) -> None:
        """Keep an idle socket open, and start over if a send goes unanswered too long."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if self.outbox.oldest_unanswered_seconds() > self.options.reply_timeout_seconds:
                log.info(
                    "no reply to a send for %.0f s: reconnecting",
                    self.options.reply_timeout_seconds,
                )
                await ws.close()
                return
            if time.monotonic() - self._last_frame_sent > self.options.keepalive_seconds:
                await self._send(frames.encode_client(frames.Ping()))

    # -- acknowledgements ---------------------------------------------------------------------

    async def ack(self, seq: int) -> None:
        """Acknowledge deliveries up to `seq` (already saved as consumed) on the current socket."""
        if not self.attached.is_set() or seq <= self._acked or seq > self._queued:
            return
        self._acked = seq
        with contextlib.suppress(ConnectionClosed):
            await self._send(frames.encode_client(frames.Ack(seq)))

    async def close(self) -> None:
        """Close the socket normally (1000); `run` then returns instead of reconnecting."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.close()


def _terminal_close(closed: ConnectionClosed) -> ClientError | None:
    frame = closed.rcvd
    code = frame.code if frame is not None else None
    reason = frame.reason if frame is not None else ""
    if code in (CloseCode.AUTH_FAILED, CloseCode.SESSION_ENDED):
        return AuthenticationError(f"the session ended ({reason or code}); log in again")
    if code == CloseCode.FORBIDDEN:
        return DeviceRevoked("this device was revoked")
    if code == CloseCode.DISPLACED:
        return Displaced("another connection attached this device")
    if code in (CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG):
        return ClientError(f"the server closed the connection: {reason or code}")
    return None


def _uint(frame: dict[str, Any], name: str) -> int:
    value = frame.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError(f"server {frame['type']} frame has no valid {name!r}")
    return value


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise FrameError("server frame lacks a base64 field")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("server frame has invalid base64") from None
