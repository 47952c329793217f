"""HTTP endpoints: health, login/logout, the caller's account and conversations, devices.

Every error body is `{"error": {"code": ..., "message": ...}}` with a stable code from
protocol.errors.ErrorCode; no handler lets a traceback or a 500 with details reach a client.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from securemsg.audit.events import MAX_NAME_CHARS, Source, clean_text
from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode, ProtocolError
from securemsg.server.login import LoginError, Principal
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.errors import StorageError

if TYPE_CHECKING:
    from securemsg.server.app import Services

log = logging.getLogger("securemsg.http")

_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.TOO_DEEP: 400,
    ErrorCode.BAD_BASE64: 400,
    ErrorCode.BAD_DEVICE: 400,
    ErrorCode.BAD_SIGNATURE: 400,
    ErrorCode.STALE_DEVICE_LIST: 409,
    ErrorCode.WRONG_STATE: 409,
    ErrorCode.EXPORT_TOO_LARGE: 413,
    ErrorCode.BAD_GRANT: 400,
    ErrorCode.NO_GRANT: 403,
    ErrorCode.LOGIN_FAILED: 401,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


class HttpError(Exception):
    def __init__(self, code: ErrorCode, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


def error_response(code: ErrorCode, message: str, *, retry_after: float | None = None) -> Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(
        {"error": {"code": code.value, "message": message}},
        status_code=_STATUS.get(code, 400),
        headers=headers,
    )


async def internal_error(request: Request, exc: Exception) -> Response:
    # The one catch-all: log the type and place, never the request content.
    log.error("unhandled %s in %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": ErrorCode.UNAVAILABLE.value, "message": "internal error"}},
        status_code=500,
    )


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_source(request: Request) -> Source:
    """Where a request came from, for the audit log: the peer address and a request id (the
    client's `X-Request-ID` when well-formed, else a fresh one)."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    address = clean_text(request.client.host, MAX_NAME_CHARS) if request.client else None
    return Source(address=address or None, request_id=request_id)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


PublicHandler = Callable[[Request, "Services"], Awaitable[Response]]
Handler = Callable[[Request, "Services", Principal], Awaitable[Response]]


async def _guarded(work: Awaitable[Response]) -> Response:
    """Map service errors to stable HTTP errors."""
    try:
        return await work
    except HttpError as exc:
        return error_response(exc.code, str(exc), retry_after=exc.retry_after)
    except LoginError as exc:
        return error_response(exc.code, str(exc), retry_after=exc.retry_after)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    except StorageError:
        return error_response(ErrorCode.UNAVAILABLE, "storage unavailable, try again")


def public(handler: PublicHandler) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        return await _guarded(handler(request, services_of(request)))

    return wrapped


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The handler runs only for a live bearer token."""

    async def run(request: Request) -> Response:
        services = services_of(request)
        principal = await _principal(request, services)
        return await handler(request, services, principal)

    async def wrapped(request: Request) -> Response:
        return await _guarded(run(request))

    return wrapped


async def _principal(request: Request, services: Services) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(ErrorCode.AUTH_REQUIRED, "send 'Authorization: Bearer <token>'")
    return await services.login.authenticate(token.strip(), now_ms=services.clock.now_ms())


async def read_json(request: Request, services: Services) -> dict[str, Any]:
    limit = services.settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(ErrorCode.FRAME_TOO_LARGE, f"request body exceeds the {limit}-byte limit")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(
                    ErrorCode.FRAME_TOO_LARGE, f"request body exceeds the {limit}-byte limit"
                )
    except ClientDisconnect:  # gone mid-body (or cut off by request_timeout_seconds)
        raise HttpError(ErrorCode.BAD_REQUEST, "the request body did not arrive") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(ErrorCode.BAD_JSON, "request body is not UTF-8") from None
    value = frames.loads_json(
        text,
        frames.FrameLimits(max_frame_bytes=limit, max_json_depth=services.settings.max_json_depth),
    )
    if not isinstance(value, dict):
        raise HttpError(ErrorCode.BAD_REQUEST, "request body must be a JSON object")
    return value


def string_field(body: dict[str, Any], name: str, *, max_chars: int = 1024) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise HttpError(ErrorCode.BAD_REQUEST, f"'{name}' must be a non-empty string")
    return value


def b64_field(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise HttpError(ErrorCode.BAD_REQUEST, f"'{name}' must be a base64 string")
    return frames.decode_b64(value, what=name)


# -- handlers ---------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    services = services_of(request)
    try:
        await services.database.ping()
    except StorageError:
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@public
async def login(request: Request, services: Services) -> Response:
    body = await read_json(request, services)
    username = string_field(body, "username", max_chars=64)
    password = string_field(body, "password", max_chars=services.settings.max_password_bytes)
    address = request.client.host if request.client else "unknown"
    result = await services.login.login(
        username,
        password,
        address=address,
        now_ms=services.clock.now_ms(),
        request_id=request_source(request).request_id,
    )
    return JSONResponse(
        {
            "token": result.token,
            "account": str(result.principal.account_id),
            "username": result.principal.username,
            "role": result.principal.role.value,
            "expires_ms": result.expires_ms,
        },
        headers={"Cache-Control": "no-store"},
    )


@authenticated
async def logout(request: Request, services: Services, principal: Principal) -> Response:
    await services.login.logout(
        principal, now_ms=services.clock.now_ms(), source=request_source(request)
    )
    return Response(status_code=204)


@authenticated
async def me(request: Request, services: Services, principal: Principal) -> Response:
    return JSONResponse(
        {
            "account": str(principal.account_id),
            "username": principal.username,
            "role": principal.role.value,
        }
    )


@authenticated
async def conversations(request: Request, services: Services, principal: Principal) -> Response:
    async with services.database.read() as conn:
        found = await ConversationStore(conn).of_account(principal.account_id)
    return JSONResponse(
        {
            "conversations": [
                {
                    "id": str(c.id),
                    "created_ms": c.created_ms,
                    "members": [
                        {"account": str(m.account_id), "username": m.username, "role": m.role}
                        for m in c.members
                    ],
                }
                for c in found
            ]
        }
    )


@authenticated
async def publish_devices(request: Request, services: Services, principal: Principal) -> Response:
    body = await read_json(request, services)
    certificates = body.get("certificates", [])
    if not isinstance(certificates, list) or not all(isinstance(c, str) for c in certificates):
        raise HttpError(ErrorCode.BAD_REQUEST, "'certificates' must be a list of base64 strings")
    limit = services.settings.max_devices_per_account
    if len(certificates) > limit:
        raise HttpError(ErrorCode.BAD_DEVICE, f"more than {limit} device certificates")
    certs = [frames.decode_b64(c, what="certificate") for c in certificates]
    result = await services.devices.publish(
        principal.account_id,
        identity_key=b64_field(body, "identity_key"),
        device_list=b64_field(body, "device_list"),
        certificates=certs,
        now_ms=services.clock.now_ms(),
        source=request_source(request),
    )
    for socket in services.hub.of_account(principal.account_id):
        if socket.device_id in result.revoked:
            socket.close_soon(CloseCode.FORBIDDEN, ErrorCode.BAD_DEVICE, "this device was revoked")
    return JSONResponse(
        {"list_version": result.list_version, "revoked": [str(d) for d in result.revoked]}
    )


@authenticated
async def account_devices(request: Request, services: Services, principal: Principal) -> Response:
    try:
        account_id = uuid.UUID(request.path_params["account_id"])
    except ValueError:
        raise HttpError(ErrorCode.NOT_FOUND, "no such account") from None
    published = await services.devices.published(
        principal.account_id, account_id, now_ms=services.clock.now_ms()
    )
    if published is None:
        raise HttpError(ErrorCode.NOT_FOUND, "no such account")
    return JSONResponse(
        {
            "account": str(account_id),
            "identity_key": None
            if published.identity_key is None
            else frames.b64(published.identity_key),
            "device_list": None
            if published.device_list is None
            else frames.b64(published.device_list),
            "certificates": {str(d): frames.b64(c) for d, c in published.certificates.items()},
        }
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/login", login, methods=["POST"]),
        Route("/v1/logout", logout, methods=["POST"]),
        Route("/v1/me", me, methods=["GET"]),
        Route("/v1/conversations", conversations, methods=["GET"]),
        Route("/v1/devices", publish_devices, methods=["PUT"]),
        Route("/v1/accounts/{account_id}/devices", account_devices, methods=["GET"]),
    ]
