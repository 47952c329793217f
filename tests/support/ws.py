"""A raw WebSocket client for tests that speak the wire protocol directly."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def open_socket(
    url: str, *, token: str | None = None, origin: str | None = None, **kwargs: Any
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(
        url,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        open_timeout=10,
        **kwargs,
    )


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    import asyncio

    data = await asyncio.wait_for(ws.recv(), timeout)
    value = json.loads(data)
    assert isinstance(value, dict)
    return value


async def until_closed(
    ws: ClientConnection, timeout: float = 10
) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; return the close code and the frames seen before it."""
    import asyncio

    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen.append(json.loads(await ws.recv()))
    except ConnectionClosed:
        pass
    return ws.close_code, seen


async def authenticated(url: str, token: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await open_socket(url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ready = await recv_json(ws)
    assert ready["type"] == "ready", ready
    return ws, ready
