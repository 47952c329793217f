"""The compliance REST API over the audit log: thin HTTP adapters over `ComplianceService`.

Every route but `/v1/audit/key` needs a bearer token of the `compliance` role; other roles get
403 and their attempt is recorded. Unknown query parameters are refused rather than ignored, so
a mistyped filter never silently widens a query. docs/audit.md documents every route.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from securemsg.audit.compliance import DEFAULT_REASON, Caller, ExportFormat
from securemsg.audit.events import MAX_SAFE_INTEGER, Actor, AuditAction
from securemsg.protocol import frames
from securemsg.protocol.errors import ErrorCode
from securemsg.server import http
from securemsg.server.http import HttpError
from securemsg.server.login import Principal
from securemsg.storage.audit import EventFilter, StoredEvent
from securemsg.storage.audit_tree import StoredCheckpoint
from securemsg.storage.errors import StorageError

if TYPE_CHECKING:
    from securemsg.server.app import Services

log = logging.getLogger("securemsg.audit")

_FILTERS = ("client", "actor", "action", "purpose", "outcome", "since_ms", "until_ms")
# Every integer parameter ends up in the audit event that records the call, which holds exact
# JSON integers only: a larger one would fail there, after the request was accepted (a 500).
_MAX_INTEGER = MAX_SAFE_INTEGER
_NO_STORE = {"Cache-Control": "no-store"}


async def _caller(
    request: Request, services: Services, principal: Principal, action: AuditAction
) -> Caller:
    """Who is calling; a caller of another role is refused (and recorded) before anything
    in the request is even parsed."""
    actor = Actor(principal.account_id, principal.username, principal.role.value)
    reason = request.query_params.get("reason", DEFAULT_REASON)
    caller = Caller(actor, http.request_source(request), reason)
    await services.compliance.authorize(caller, action, now_ms=services.clock.now_ms())
    return caller


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params = request.query_params
    for name in params:
        if name not in allowed and name != "reason":
            raise HttpError(ErrorCode.BAD_REQUEST, f"unknown query parameter {name[:40]!r}")
        if len(params.getlist(name)) > 1:
            raise HttpError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} is repeated")
    return {name: params[name] for name in params}


def _integer(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) > _MAX_INTEGER:
        raise HttpError(ErrorCode.BAD_REQUEST, f"{name!r} must be a non-negative integer")
    return int(value)


def _filter(params: dict[str, str]) -> EventFilter:
    return EventFilter(
        subject=params.get("client"),
        actor=params.get("actor"),
        action=params.get("action"),
        purpose=params.get("purpose"),
        outcome=params.get("outcome"),
        since_ms=_integer(params, "since_ms"),
        until_ms=_integer(params, "until_ms"),
    )


def event_json(event: StoredEvent) -> dict[str, object]:
    return {"index": event.index, **event.fields}


def _note(checkpoint: StoredCheckpoint | None) -> str | None:
    return None if checkpoint is None else checkpoint.note


@http.authenticated
async def query_events(request: Request, services: Services, principal: Principal) -> Response:
    caller = await _caller(request, services, principal, AuditAction.AUDIT_QUERY)
    params = _params(request, (*_FILTERS, "cursor", "limit"))
    limit = _integer(params, "limit")
    page = await services.compliance.query(
        caller,
        _filter(params),
        after=_integer(params, "cursor"),
        limit=100 if limit is None else limit,
        now_ms=services.clock.now_ms(),
    )
    return JSONResponse(
        {
            "events": [event_json(event) for event in page.events],
            "next_cursor": None if page.next_cursor is None else str(page.next_cursor),
            "checkpoint_size": page.checkpoint_size,
        },
        headers=_NO_STORE,
    )


@http.authenticated
async def get_event(request: Request, services: Services, principal: Principal) -> Response:
    caller = await _caller(request, services, principal, AuditAction.AUDIT_EVENT)
    params = _params(request, ("size",))
    index = _integer({"index": request.path_params["index"]}, "index")
    if index is None:
        raise HttpError(ErrorCode.NOT_FOUND, "no such audit event")
    found = await services.compliance.event(
        caller,
        index,
        size=_integer(params, "size"),
        now_ms=services.clock.now_ms(),
    )
    proof = found.proof
    return JSONResponse(
        {
            "index": found.event.index,
            "event": found.event.fields,
            "salt": frames.b64(found.event.salt),
            "leaf": frames.b64(found.leaf),
            "size": found.size,
            "inclusion_proof": None if proof is None else [frames.b64(h) for h in proof],
            "checkpoint": _note(found.checkpoint),
        },
        headers=_NO_STORE,
    )


@http.authenticated
async def checkpoint(request: Request, services: Services, principal: Principal) -> Response:
    caller = await _caller(request, services, principal, AuditAction.AUDIT_CHECKPOINT)
    _params(request, ())
    latest = await services.compliance.checkpoint(caller, now_ms=services.clock.now_ms())
    return PlainTextResponse(latest.note, headers=_NO_STORE)


@http.authenticated
async def consistency(request: Request, services: Services, principal: Principal) -> Response:
    caller = await _caller(request, services, principal, AuditAction.AUDIT_CONSISTENCY)
    params = _params(request, ("from", "to"))
    first = _integer(params, "from")
    if first is None:
        raise HttpError(ErrorCode.BAD_REQUEST, "'from' (the size of your checkpoint) is required")
    found = await services.compliance.consistency(
        caller,
        first,
        _integer(params, "to"),
        now_ms=services.clock.now_ms(),
    )
    return JSONResponse(
        {
            "from": found.first,
            "to": found.second,
            "proof": [frames.b64(h) for h in found.proof],
            "checkpoint": _note(found.checkpoint),
        },
        headers=_NO_STORE,
    )


@http.authenticated
async def export(request: Request, services: Services, principal: Principal) -> Response:
    caller = await _caller(request, services, principal, AuditAction.AUDIT_EXPORT)
    params = _params(request, (*_FILTERS, "format"))
    kind = params.get("format", "ndjson")
    if kind not in ("ndjson", "csv"):
        raise HttpError(ErrorCode.BAD_REQUEST, "'format' must be 'ndjson' or 'csv'")
    fmt: ExportFormat = "csv" if kind == "csv" else "ndjson"
    bundle = await services.compliance.export(
        caller, _filter(params), format=fmt, now_ms=services.clock.now_ms()
    )
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    name = f"audit-export-{bundle.header.size}-{bundle.header.exported_ms}.{fmt}"
    return StreamingResponse(
        _until_storage_fails(bundle.chunks),
        media_type=media,
        headers={**_NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _until_storage_fails(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The bundle's chunks; if the database fails mid-stream, stop. The bundle then lacks its
    `end` record, so a verifier refuses it as cut off."""
    try:
        async for chunk in chunks:
            yield chunk
    except StorageError as exc:
        log.warning("audit export cut off: %s", exc)


@http.public
async def verifier_keys(request: Request, services: Services) -> Response:
    """Public: the log's verifier key strings, one per line. A verifier should still get the
    key out of band; this is for convenience and for comparing against it."""
    keys = [verifier.key_string() for verifier in services.integrator.verifiers]
    return PlainTextResponse("".join(key + "\n" for key in keys))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/audit/events", query_events, methods=["GET"]),
        Route("/v1/audit/events/{index}", get_event, methods=["GET"]),
        Route("/v1/audit/checkpoint", checkpoint, methods=["GET"]),
        Route("/v1/audit/consistency", consistency, methods=["GET"]),
        Route("/v1/audit/export", export, methods=["GET"]),
        Route("/v1/audit/key", verifier_keys, methods=["GET"]),
    ]
