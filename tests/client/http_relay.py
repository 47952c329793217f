"""An HTTP man-in-the-middle for SDK tests: a malicious server's HTTP side.

`HttpRelay` passes every request to the real server and hands each JSON answer to a rewrite
function first, so a test can make the "server" lie in an answer (a grants listing, say) while
everything else is real. The WebSocket goes straight to the server (`ClientOptions.websocket_url`)
or through `relays.HostileRelay`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.server import free_port

# (method, path, JSON answer) -> the answer to give instead
Rewrite = Callable[[str, str, Any], Any]

_METHODS = ["GET", "POST", "PUT", "DELETE"]


class HttpRelay:
    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(base_url=self.upstream, timeout=10)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self._http.aclose()

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        answer = await self._http.request(
            request.method,
            path,
            params=dict(request.query_params),
            content=await request.body(),
            headers=headers,
        )
        body = answer.content
        if answer.headers.get("content-type", "").startswith("application/json") and body:
            rewritten = self.rewrite(request.method, path, answer.json())
            body = json.dumps(rewritten).encode()
        return Response(
            body, status_code=answer.status_code, media_type=answer.headers.get("content-type")
        )
