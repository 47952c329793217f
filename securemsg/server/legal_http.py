"""HTTP routes for legal requests, legal holds and the accounting of disclosures: thin adapters
over server/legal.py and server/holds.py.

Every `/v1/legal/...` route needs a compliance officer's token; another role gets 403, recorded
in the audit log before anything else of the request is read. `GET /v1/disclosures` is for any
account and answers for the caller only. Unknown body fields and query parameters are refused.
docs/legal-requests.md and docs/protocol.md §2 document every route.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from securemsg.audit.events import Actor, AuditAction
from securemsg.protocol.errors import ErrorCode
from securemsg.server import http
from securemsg.server.http import HttpError
from securemsg.server.legal import NewRequest
from securemsg.server.legal_calls import Officer
from securemsg.server.login import Principal
from securemsg.storage.legal import Hold, LegalRequest, Scope, Status

if TYPE_CHECKING:
    from securemsg.server.app import Services

_NO_STORE = {"Cache-Control": "no-store"}
_MAX_INTEGER = 2**53 - 1


def _officer(request: Request, principal: Principal) -> Officer:
    actor = Actor(principal.account_id, principal.username, principal.role.value)
    return Officer(actor, http.request_source(request))


def _path_id(request: Request, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["id"])
    except ValueError:
        raise HttpError(ErrorCode.NOT_FOUND, f"no such {what}") from None


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    """A path id as the audit event's resource, when it is one."""
    try:
        return None if value is None else uuid.UUID(value)
    except ValueError:
        return None


async def _authorized(
    request: Request, services: Services, principal: Principal, action: AuditAction, kind: str
) -> Officer:
    """The officer, once the role check (recorded when refused) has passed."""
    officer = _officer(request, principal)
    target = _uuid_or_none(request.path_params.get("id"))
    now_ms = services.clock.now_ms()
    if kind == "hold":
        await services.holds.authorize(officer, action, target, now_ms=now_ms)
    else:
        await services.legal.authorize(officer, action, target, now_ms=now_ms)
    return officer


async def _body(request: Request, services: Services, allowed: set[str]) -> dict[str, Any]:
    """The JSON object body (an empty body reads as `{}`), with no field outside `allowed`."""
    empty = request.headers.get("content-length", "0") == "0"
    if empty and "transfer-encoding" not in request.headers:
        return {}
    body = await http.read_json(request, services)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(ErrorCode.BAD_REQUEST, f"unknown field {unknown[0][:40]!r}")
    return body


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params = request.query_params
    for name in params:
        if name not in allowed:
            raise HttpError(ErrorCode.BAD_REQUEST, f"unknown query parameter {name[:40]!r}")
        if len(params.getlist(name)) > 1:
            raise HttpError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} is repeated")
    return {name: params[name] for name in params}


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise HttpError(ErrorCode.BAD_REQUEST, f"'{name}' must be a string")
    return value


def _optional_uuid(body: dict[str, Any], name: str) -> uuid.UUID | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return uuid.UUID(value)
    except ValueError:
        raise HttpError(ErrorCode.BAD_REQUEST, f"'{name}' must be a UUID string") from None


def _optional_ms(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INTEGER:
        raise HttpError(ErrorCode.BAD_REQUEST, f"'{name}' must be a time in ms (0..2**53-1)")
    return value


def _limit(params: dict[str, str]) -> int:
    value = params.get("limit", "100")
    if not value.isdigit() or len(value) > 6:
        raise HttpError(ErrorCode.BAD_REQUEST, "'limit' must be a positive integer")
    return int(value)


def _cursor(params: dict[str, str]) -> uuid.UUID | None:
    value = params.get("cursor")
    try:
        return None if value is None else uuid.UUID(value)
    except ValueError:
        raise HttpError(ErrorCode.BAD_REQUEST, "'cursor' is not a cursor from this API") from None


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def request_json(r: LegalRequest) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "status": r.status.value,
        "authority": r.authority,
        "reference": r.reference,
        "legal_basis": r.legal_basis,
        "scope": {
            "account": _id(r.scope.account),
            "conversation": _id(r.scope.conversation),
            "from_ms": r.scope.from_ms,
            "until_ms": r.scope.until_ms,
        },
        "notice_after_ms": r.notice_after_ms,
        "filed_by": str(r.filed_by),
        "filed_ms": r.filed_ms,
        "decided_by": _id(r.decided_by),
        "decided_ms": r.decided_ms,
        "decision_note": r.decision_note,
        "exported_ms": r.exported_ms,
        "bundle_sha256": None if r.bundle_sha256 is None else r.bundle_sha256.hex(),
        "closed_ms": r.closed_ms,
    }


def hold_json(h: Hold) -> dict[str, Any]:
    return {
        "id": str(h.id),
        "account": _id(h.scope_account),
        "conversation": _id(h.scope_conversation),
        "reason": h.reason,
        "placed_by": str(h.placed_by),
        "placed_ms": h.placed_ms,
        "released_by": _id(h.released_by),
        "released_ms": h.released_ms,
        "active": h.active,
    }


def _json(value: dict[str, Any], status_code: int = 200) -> Response:
    return JSONResponse(value, status_code=status_code, headers=_NO_STORE)


# -- requests ------------------------------------------------------------------------------


@http.authenticated
async def file_request(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_FILED, "request")
    fields = {"authority", "reference", "legal_basis", "scope", "notice_after_ms"}
    body = await _body(request, services, fields)
    scope = body.get("scope")
    if not isinstance(scope, dict):
        raise HttpError(ErrorCode.BAD_REQUEST, "'scope' must be an object")
    unknown = sorted(set(scope) - {"account", "conversation", "from_ms", "until_ms"})
    if unknown:
        raise HttpError(ErrorCode.BAD_REQUEST, f"unknown scope field {unknown[0][:40]!r}")
    new = NewRequest(
        authority=_text(body, "authority") or "",
        reference=_text(body, "reference") or "",
        legal_basis=_text(body, "legal_basis") or "",
        scope=Scope(
            _optional_uuid(scope, "account"),
            _optional_uuid(scope, "conversation"),
            _optional_ms(scope, "from_ms"),
            _optional_ms(scope, "until_ms"),
        ),
        notice_after_ms=_optional_ms(body, "notice_after_ms"),
    )
    filed = await services.legal.file(officer, new, now_ms=services.clock.now_ms())
    return _json(request_json(filed), status_code=201)


@http.authenticated
async def list_requests(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_READ, "request")
    params = _query(request, ("status", "limit", "cursor"))
    status = params.get("status")
    if status is not None and status not in set(Status):
        raise HttpError(ErrorCode.BAD_REQUEST, f"'status' must be one of {', '.join(Status)}")
    found, cursor = await services.legal.page(
        officer,
        status=None if status is None else Status(status),
        after=_cursor(params),
        limit=_limit(params),
        now_ms=services.clock.now_ms(),
    )
    return _json({"requests": [request_json(r) for r in found], "next_cursor": _id(cursor)})


@http.authenticated
async def get_request(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_READ, "request")
    _query(request, ())
    request_id = _path_id(request, "legal request")
    found = await services.legal.get(officer, request_id, now_ms=services.clock.now_ms())
    return _json(request_json(found))


async def _decide(
    request: Request, services: Services, principal: Principal, *, approve: bool
) -> Response:
    action = AuditAction.LEGAL_APPROVED if approve else AuditAction.LEGAL_DENIED
    officer = await _authorized(request, services, principal, action, "request")
    request_id = _path_id(request, "legal request")
    body = await _body(request, services, {"note"})
    decided = await services.legal.decide(
        officer,
        request_id,
        approve=approve,
        note=_text(body, "note", required=False),
        now_ms=services.clock.now_ms(),
    )
    return _json(request_json(decided))


@http.authenticated
async def approve(request: Request, services: Services, principal: Principal) -> Response:
    return await _decide(request, services, principal, approve=True)


@http.authenticated
async def deny(request: Request, services: Services, principal: Principal) -> Response:
    return await _decide(request, services, principal, approve=False)


@http.authenticated
async def export(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_EXPORTED, "request")
    request_id = _path_id(request, "legal request")
    exported = await services.legal.export(officer, request_id, now_ms=services.clock.now_ms())
    return _json(request_json(exported))


@http.authenticated
async def download(request: Request, services: Services, principal: Principal) -> Response:
    action = AuditAction.LEGAL_DOWNLOADED
    officer = await _authorized(request, services, principal, action, "request")
    request_id = _path_id(request, "legal request")
    bundle = await services.legal.download(officer, request_id, now_ms=services.clock.now_ms())
    name = f"legal-export-{request_id}.json"
    return Response(
        bundle.data,
        media_type="application/json",
        headers={
            **_NO_STORE,
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-SHA256": bundle.sha256.hex(),
        },
    )


@http.authenticated
async def close(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_CLOSED, "request")
    request_id = _path_id(request, "legal request")
    closed = await services.legal.close(officer, request_id, now_ms=services.clock.now_ms())
    return _json(request_json(closed))


# -- holds ---------------------------------------------------------------------------------


@http.authenticated
async def place_hold(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.HOLD_PLACED, "hold")
    body = await _body(request, services, {"account", "conversation", "reason"})
    hold = await services.holds.place(
        officer,
        account=_optional_uuid(body, "account"),
        conversation=_optional_uuid(body, "conversation"),
        reason=_text(body, "reason") or "",
        now_ms=services.clock.now_ms(),
    )
    return _json(hold_json(hold), status_code=201)


@http.authenticated
async def list_holds(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.LEGAL_READ, "hold")
    params = _query(request, ("active", "limit", "cursor"))
    active = params.get("active", "true")
    if active not in ("true", "false"):
        raise HttpError(ErrorCode.BAD_REQUEST, "'active' must be 'true' or 'false'")
    found, cursor = await services.holds.page(
        officer,
        active_only=active == "true",
        after=_cursor(params),
        limit=_limit(params),
        now_ms=services.clock.now_ms(),
    )
    return _json({"holds": [hold_json(h) for h in found], "next_cursor": _id(cursor)})


@http.authenticated
async def release_hold(request: Request, services: Services, principal: Principal) -> Response:
    officer = await _authorized(request, services, principal, AuditAction.HOLD_RELEASED, "hold")
    hold_id = _path_id(request, "legal hold")
    released = await services.holds.release(officer, hold_id, now_ms=services.clock.now_ms())
    return _json(hold_json(released))


# -- the accounting of disclosures ---------------------------------------------------------


@http.authenticated
async def disclosures(request: Request, services: Services, principal: Principal) -> Response:
    _query(request, ())
    found = await services.legal.disclosures(principal.account_id, now_ms=services.clock.now_ms())
    return _json(
        {
            "disclosures": [
                {
                    "id": str(d.request_id),
                    "date_ms": d.date_ms,
                    "recipient": d.recipient,
                    "description": d.description,
                    "purpose": d.purpose,
                }
                for d in found
            ]
        }
    )


def routes() -> list[BaseRoute]:
    requests = "/v1/legal/requests"
    return [
        Route(requests, file_request, methods=["POST"]),
        Route(requests, list_requests, methods=["GET"]),
        Route(requests + "/{id}", get_request, methods=["GET"]),
        Route(requests + "/{id}/approve", approve, methods=["POST"]),
        Route(requests + "/{id}/deny", deny, methods=["POST"]),
        Route(requests + "/{id}/export", export, methods=["POST"]),
        Route(requests + "/{id}/bundle", download, methods=["GET"]),
        Route(requests + "/{id}/close", close, methods=["POST"]),
        Route("/v1/legal/holds", place_hold, methods=["POST"]),
        Route("/v1/legal/holds", list_holds, methods=["GET"]),
        Route("/v1/legal/holds/{id}/release", release_hold, methods=["POST"]),
        Route("/v1/disclosures", disclosures, methods=["GET"]),
    ]
