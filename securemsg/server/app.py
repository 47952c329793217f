"""`create_app(settings)`: the single place where securemsg's parts are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from securemsg.audit.compliance import ComplianceService
from securemsg.audit.integrator import Integrator
from securemsg.clock import Clock, SystemClock
from securemsg.protocol.errors import CloseCode, ErrorCode
from securemsg.server import compliance, grants_http, http, legal_http
from securemsg.server.admin import AdminService
from securemsg.server.broker import Broker, LocalBroker, RedisBroker
from securemsg.server.delivery import Delivery, Push
from securemsg.server.devices import DeviceService
from securemsg.server.grants import GrantService
from securemsg.server.holds import HoldService
from securemsg.server.hub import Hub
from securemsg.server.legal import LegalService
from securemsg.server.login import TOUCH_EVERY_MS, LoginService
from securemsg.server.passwords import PasswordHashing
from securemsg.server.retention import RetentionService
from securemsg.server.websocket import websocket_endpoint
from securemsg.settings import Settings
from securemsg.storage import migrate
from securemsg.storage.database import Database
from securemsg.storage.errors import StorageError
from securemsg.storage.sessions import SessionStore

log = logging.getLogger("securemsg.server")


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    database: Database
    hashing: PasswordHashing
    login: LoginService
    admin: AdminService
    devices: DeviceService
    hub: Hub
    broker: Broker
    delivery: Delivery
    integrator: Integrator
    compliance: ComplianceService
    grants: GrantService
    legal: LegalService
    holds: HoldService
    retention: RetentionService


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    database = Database.open(settings.effective_database_url)
    hashing = PasswordHashing(settings)
    hub = Hub()
    broker: Broker = RedisBroker(settings.redis_url) if settings.redis_url else LocalBroker()

    def committed(pushes: Sequence[Push]) -> None:
        hub.deliver(pushes)
        broker.publish(device_id for device_id, _, _, _ in pushes)

    delivery = Delivery(database, settings, clock, committed)
    integrator = Integrator(
        keys_dir=settings.keys_dir,
        origin=settings.audit_origin,
        max_leaves=settings.audit_integrate_max_leaves,
        interval_seconds=settings.audit_integrate_interval_seconds,
        create_key=True,
    )
    return Services(
        settings=settings,
        clock=clock,
        database=database,
        hashing=hashing,
        login=LoginService(database, settings, hashing),
        admin=AdminService(database, hashing, max_password_bytes=settings.max_password_bytes),
        devices=DeviceService(database, settings),
        hub=hub,
        broker=broker,
        delivery=delivery,
        grants=GrantService(database, settings, delivery),
        integrator=integrator,
        compliance=ComplianceService(database, max_page_events=settings.audit_max_page_events),
        legal=LegalService(database, settings, integrator),
        holds=HoldService(database, settings),
        retention=RetentionService(database, settings),
    )


async def watch_sessions(services: Services) -> None:
    """Close sockets whose session ended (logout, revocation, expiry, disabled account)."""
    interval = services.settings.session_check_interval_seconds
    idle_ms = int(services.settings.session_idle_seconds * 1000)
    while True:
        await asyncio.sleep(interval)
        sockets = services.hub.sockets()
        sessions = {s.session_id for s in sockets if s.session_id is not None}
        if not sessions:
            continue
        now_ms = services.clock.now_ms()
        try:
            async with services.database.write() as conn:
                store = SessionStore(conn)
                ended = await store.ended(sessions, now_ms=now_ms, idle_ms=idle_ms)
                # An open socket is activity: keep its session from idling out.
                await store.touch(sessions - ended, now_ms=now_ms, older_than_ms=TOUCH_EVERY_MS)
        except StorageError as exc:
            log.warning("session check skipped: %s", exc)
            continue
        for socket in sockets:
            if socket.session_id in ended:
                socket.close_soon(
                    CloseCode.SESSION_ENDED, ErrorCode.SESSION_ENDED, "session ended; log in again"
                )


WEBSOCKET_PATH = "/v1/ws"


class App:
    """The ASGI application: `/v1/ws` straight to the WebSocket endpoint, the rest to Starlette.

    Starlette's middleware and router add nothing to the WebSocket (the endpoint answers every
    error itself), but each open socket would keep their seven suspended coroutine frames, about
    2 KiB, and every frame sent would pass two more send wrappers (bench/relay.py measures both:
    idle socket memory, server CPU per message).
    """

    def __init__(self, starlette: Starlette, services: Services) -> None:
        self.starlette = starlette
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI servers differ on whether `path` includes `root_path` (uvicorn's does).
        paths = (WEBSOCKET_PATH, scope.get("root_path", "") + WEBSOCKET_PATH)
        if scope["type"] == "websocket" and scope["path"] in paths:
            await websocket_endpoint(WebSocket(scope, receive, send), self.services)
            return
        await self.starlette(scope, receive, send)


def create_app(settings: Settings, *, clock: Clock | None = None) -> App:
    services = build_services(settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await migrate.upgrade(services.database)
        services.delivery.start()
        services.integrator.start(services.database, services.clock)
        services.retention.start(services.clock)
        await services.broker.start(services.hub.wake_devices)
        watcher = asyncio.create_task(watch_sessions(services), name="session-watcher")
        log.info("securemsg ready (%s)", services.database.dialect)
        try:
            yield
        finally:
            watcher.cancel()
            for socket in services.hub.sockets():
                socket.close_soon(
                    CloseCode.GOING_AWAY, ErrorCode.UNAVAILABLE, "server shutting down"
                )
            await services.retention.stop()
            await services.delivery.stop()
            await services.broker.stop()
            await services.integrator.stop(services.database, services.clock)
            services.hashing.close()
            await services.database.close()

    app = Starlette(
        routes=[
            Route("/healthz", http.healthz, methods=["GET"]),
            *http.routes(),
            *compliance.routes(),
            *grants_http.routes(),
            *legal_http.routes(),
        ],
        exception_handlers={Exception: http.internal_error},
        lifespan=lifespan,
    )
    app.state.services = services
    return App(app, services)
