"""HTTP routes for supervisor grants, conversation history and key shares (see server/grants.py)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from securemsg.protocol import frames
from securemsg.protocol.errors import ErrorCode
from securemsg.server.http import HttpError, authenticated, b64_field, read_json, request_source
from securemsg.server.login import Principal
from securemsg.storage.grants import StoredGrant

if TYPE_CHECKING:
    from securemsg.server.app import Services


def _uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise HttpError(ErrorCode.NOT_FOUND, f"no such {name.removesuffix('_id')}") from None


def _grant_json(grant: StoredGrant, now_ms: int) -> dict[str, object]:
    return {
        "id": str(grant.id),
        "conversation": str(grant.conversation_id),
        "supervisor": str(grant.supervisor_id),
        "therapist": str(grant.therapist_id),
        "from_ms": grant.from_ms,
        "until_ms": grant.until_ms,
        "include_history": grant.include_history,
        "record": frames.b64(grant.record),
        "consent": None if grant.consent is None else frames.b64(grant.consent),
        "revoked_ms": grant.revoked_ms,
        "active": grant.active_at(now_ms),
    }


@authenticated
async def create_grant(request: Request, services: Services, principal: Principal) -> Response:
    body = await read_json(request, services)
    consent = b64_field(body, "consent") if body.get("consent") is not None else None
    now_ms = services.clock.now_ms()
    grant = await services.grants.create(
        principal,
        _uuid(request, "conversation_id"),
        b64_field(body, "grant"),
        consent,
        source=request_source(request),
        now_ms=now_ms,
    )
    return JSONResponse(_grant_json(grant, now_ms), status_code=201)


@authenticated
async def list_grants(request: Request, services: Services, principal: Principal) -> Response:
    found = await services.grants.of_conversation(principal, _uuid(request, "conversation_id"))
    now_ms = services.clock.now_ms()
    return JSONResponse({"grants": [_grant_json(g, now_ms) for g in found]})


@authenticated
async def revoke_grant(request: Request, services: Services, principal: Principal) -> Response:
    now_ms = services.clock.now_ms()
    grant = await services.grants.revoke(
        principal, _uuid(request, "grant_id"), source=request_source(request), now_ms=now_ms
    )
    return JSONResponse(_grant_json(grant, now_ms))


@authenticated
async def history(request: Request, services: Services, principal: Principal) -> Response:
    after = request.query_params.get("after", "0")
    if not after.isdigit() or len(after) > 19:
        raise HttpError(ErrorCode.BAD_REQUEST, "'after' must be a non-negative integer")
    items = await services.grants.history(
        principal,
        _uuid(request, "conversation_id"),
        after_id=int(after),
        source=request_source(request),
        now_ms=services.clock.now_ms(),
    )
    return JSONResponse(
        {
            "items": [
                {
                    "id": i.id,
                    "kind": i.kind,
                    "received_ms": i.received_ms,
                    "envelope": frames.b64(i.data),
                }
                for i in items
            ]
        }
    )


@authenticated
async def add_key_shares(request: Request, services: Services, principal: Principal) -> Response:
    body = await read_json(request, services)
    shares = body.get("shares")
    if not isinstance(shares, list) or not all(isinstance(s, str) for s in shares):
        raise HttpError(ErrorCode.BAD_REQUEST, "'shares' must be a list of base64 strings")
    count = await services.grants.add_key_shares(
        principal,
        _uuid(request, "grant_id"),
        [frames.decode_b64(s, what="share") for s in shares],
        now_ms=services.clock.now_ms(),
    )
    return JSONResponse({"stored": count})


@authenticated
async def key_shares(request: Request, services: Services, principal: Principal) -> Response:
    try:
        device_id = uuid.UUID(request.query_params.get("device", ""))
    except ValueError:
        raise HttpError(ErrorCode.BAD_REQUEST, "'device' must be a device id") from None
    shares = await services.grants.key_shares(
        principal,
        _uuid(request, "grant_id"),
        device_id,
        source=request_source(request),
        now_ms=services.clock.now_ms(),
    )
    return JSONResponse({"shares": [frames.b64(s) for s in shares]})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/conversations/{conversation_id}/grants", create_grant, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}/grants", list_grants, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/history", history, methods=["GET"]),
        Route("/v1/grants/{grant_id}/revoke", revoke_grant, methods=["POST"]),
        Route("/v1/grants/{grant_id}/key-shares", add_key_shares, methods=["POST"]),
        Route("/v1/grants/{grant_id}/key-shares", key_shares, methods=["GET"]),
    ]
