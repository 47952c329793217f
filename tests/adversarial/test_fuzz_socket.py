"""Fuzzing the real server over real sockets: the frame handler and the HTTP request parsers.

A bounded number of hypothesis examples run against one server process. Each WebSocket example
opens a socket in some state (never authenticated, authenticated, attached), sends random,
structured or mutated frames, then a `ping` probe. Properties: the socket is either still
answering or closed with a documented code (never 1011 or an abnormal close), every `error`
frame carries a documented code, nothing is stored (every table compared before and after), no
traceback reaches the server log, and the server keeps serving others.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from securemsg.protocol import frames
from securemsg.protocol.errors import CloseCode, ErrorCode
from securemsg.protocol.frames import ATTACH_PURPOSE
from securemsg.storage.models import metadata
from tests.adversarial.actors import provision_now, serving, tracebacks
from tests.adversarial.rawsocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    frame,
    handshake,
)
from tests.adversarial.strategies import frame_objects, mutated
from tests.support.db import snapshot
from tests.support.peer import Peer
from tests.support.server import ServerProcess
from tests.support.ws import open_socket

MAX_FRAME_BYTES = 8192
SOCKET_EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DOCUMENTED_CLOSES = {int(code) for code in CloseCode} | {
    1002,  # WebSocket protocol violation (e.g. RSV bits, bad opcode), by the WebSocket layer
    1007,  # invalid UTF-8 in a text frame, by the WebSocket layer
}
WIRE_CODES = {code.value for code in ErrorCode}
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@dataclass
class Target:
    server: ServerProcess
    tess: Peer  # therapist, conversation A with carl
    carl: Peer
    olga: Peer  # a client in no conversation with tess or carl
    compliance: Peer
    conversation: uuid.UUID
    valid_envelopes: list[bytes]  # tess -> carl: accepted if sent unchanged (so never sent so)
    stranger_envelopes: list[bytes]  # olga -> conversation A: refused however well-formed


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("fuzz")
    with serving(
        directory,
        max_frame_bytes=MAX_FRAME_BYTES,
        max_sockets_per_account=256,
        max_unauthenticated_sockets_per_address=256,
        login_attempts_per_address=100_000,
        login_attempts_per_account=100_000,
        auth_deadline_seconds=2,
    ) as server:
        (conversation,) = provision_now(
            server,
            {"tess": "therapist", "carl": "client", "olga": "client", "cora": "compliance"},
            [("tess", "carl")],
        )
        tess, carl, olga, cora = (Peer(server, n).login() for n in ("tess", "carl", "olga", "cora"))
        for peer in (tess, carl, olga):
            assert peer.register().status_code == 200
        to_carl = {carl.device_id: carl.device.encryption_key}
        valid = [tess.seal(conversation, to_carl, "x" * n) for n in (0, 400)]
        stranger = [olga.seal(conversation, to_carl, "x" * n) for n in (0, 400)]
        yield Target(server, tess, carl, olga, cora, conversation, valid, stranger)


async def _stored(server: ServerProcess) -> dict[str, list[tuple[Any, ...]]]:
    tables = await snapshot(server.database_url)
    # Sessions record activity (last_seen_ms); the rows themselves must not change.
    tables["sessions"] = [row[:3] for row in tables["sessions"]]
    return tables


# -- what a fuzzed socket sends --------------------------------------------------------------


def _text(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


@st.composite
def fuzzed_frame(draw: st.DrawFn, target: Target) -> str | bytes:
    kind = draw(
        st.sampled_from(
            ["text", "bytes", "object", "send-mutated", "send-stranger", "attach", "ack", "big"]
        )
    )
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "object":
        return json.dumps(draw(frame_objects))
    if kind == "send-mutated":  # a valid envelope, changed: the signature can no longer hold
        raw = draw(
            mutated(target.valid_envelopes).filter(lambda b: b not in target.valid_envelopes)
        )
        return _text({"type": "send", "envelope": frames.b64(raw)})
    if kind == "send-stranger":  # well-formed and signed, from a non-member, edited as text
        text = _text(
            {
                "type": "send",
                "envelope": frames.b64(draw(st.sampled_from(target.stranger_envelopes))),
            }
        )
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(["", " ", "\\n", "0", '"', "}", "A"])) + text[at:]
    if kind == "attach":
        device = draw(st.sampled_from([str(target.carl.device_id), str(uuid.uuid4()), "0" * 36]))
        return _text(
            {
                "type": "attach",
                "device": device,
                "signature": frames.b64(draw(st.binary(max_size=80))),
            }
            | ({"after": draw(st.integers(-5, 2**64))} if draw(st.booleans()) else {})
        )
    if kind == "ack":
        return _text(
            {"type": "ack", "seq": draw(st.integers(-(2**64), 2**64) | st.sampled_from([0, 1]))}
        )
    size = draw(st.integers(MAX_FRAME_BYTES - 64, MAX_FRAME_BYTES + 64))
    return '{"type":"ping","pad":"' + "x" * max(0, size - 28) + '"}'


@st.composite
def scripts(draw: st.DrawFn, target: Target) -> tuple[str, list[str | bytes]]:
    state = draw(st.sampled_from(["anonymous", "auth-frame", "authenticated", "attached"]))
    return state, draw(st.lists(fuzzed_frame(target), min_size=1, max_size=4))


async def _receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _open(target: Target, state: str) -> ClientConnection:
    carl = target.carl
    if state == "anonymous":
        return await open_socket(target.server.ws_url)
    if state == "auth-frame":
        ws = await open_socket(target.server.ws_url)
        await ws.send(_text({"type": "auth", "token": carl.token}))
    else:
        ws = await open_socket(target.server.ws_url, token=carl.token)
    ready = await _receive(ws)
    assert ready["type"] == "ready", ready
    if state == "attached":
        challenge = base64.b64decode(ready["challenge"])
        signature = carl.device.sign(ATTACH_PURPOSE, challenge + carl.device_id.bytes)
        await ws.send(
            _text(
                {
                    "type": "attach",
                    "device": str(carl.device_id),
                    "signature": frames.b64(signature),
                }
            )
        )
        assert (await _receive(ws))["type"] == "attached"
    return ws


async def _run_script(target: Target, state: str, sent: list[str | bytes]) -> None:
    ws = await _open(target, state)
    seen: list[dict[str, Any]] = []
    try:
        for frame in sent:
            await ws.send(frame)
            if len(frame) > MAX_FRAME_BYTES:
                # The WebSocket layer closes at once (1009) and drops the TCP connection: more
                # data from us would only race that close with a reset.
                break
        else:
            await ws.send(_text({"type": "ping"}))
        async with asyncio.timeout(10):
            while True:
                reply = await _receive(ws, timeout=10)
                seen.append(reply)
                if reply["type"] == "pong":
                    break
    except ConnectionClosed:
        pass
    finally:
        await ws.close()
    code = ws.close_code
    assert code is None or code == 1000 or code in DOCUMENTED_CLOSES, (code, seen)
    assert code not in (1006, 1011), (code, seen)
    for reply in seen:
        if reply["type"] == "error":
            assert reply["code"] in WIRE_CODES, reply
        assert reply["type"] != "accepted", "a fuzzed frame was stored"
    if state == "anonymous":  # nothing but a refusal before authentication
        assert code in (4401, 4402, 4400, 1009, 1002, 1007), (code, seen)


def test_fuzzed_frames_never_crash_store_or_leave_a_traceback(target: Target) -> None:
    before = asyncio.run(_stored(target.server))

    @SOCKET_EXAMPLES
    @given(scripts(target))
    def example(script: tuple[str, list[str | bytes]]) -> None:
        asyncio.run(_run_script(target, *script))

    example()
    assert asyncio.run(_stored(target.server)) == before, "a fuzzed frame changed stored state"
    assert tracebacks(target.server.log()) == []
    asyncio.run(_still_serving(target))


async def _still_serving(target: Target) -> None:
    """After the fuzzing, a real message still goes through."""
    tess, carl = target.tess, target.carl
    await tess.connect()
    await carl.connect()
    text = os.urandom(8).hex()
    reply = await tess.send(
        tess.seal(target.conversation, {carl.device_id: carl.device.encryption_key}, text)
    )
    assert reply["type"] == "accepted", reply
    while True:  # earlier checks left their messages in the queue: this one comes last
        delivered = await carl.next_of("deliver")
        await carl.ack(delivered["seq"])
        if carl.open(delivered["envelope"], tess) == text:
            break
    await tess.close()
    await carl.close()


# -- HTTP ------------------------------------------------------------------------------------

_json_body = frame_objects.map(json.dumps).map(str.encode)
_bodies = (
    st.binary(max_size=300)
    | _json_body
    | st.sampled_from(
        [
            b'{"username":"carl","password":' + b"[" * 50 + b"]" * 50 + b"}",
            b'{"username":"carl","password":1e999}',
            b'{"username":"carl","password":"' + b"x" * 2000 + b'"}',
            b'{"identity_key":"AAAA","device_list":"AAAA","certificates":["!!"]}',
            b'{"identity_key":"AAAA","device_list":"AAAA","certificates":'
            + b'["AAAA",' * 40
            + b'"A"]}',
            b"\xff\xfe\x00",
        ]
    )
)
_queries = st.dictionaries(
    st.sampled_from(
        [
            "client",
            "actor",
            "action",
            "purpose",
            "outcome",
            "since_ms",
            "until_ms",
            "cursor",
            "limit",
            "from",
            "to",
            "size",
            "format",
            "reason",
            "x",
        ]
    ),
    st.text(max_size=30) | st.integers(-5, 2**70).map(str),
    max_size=4,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str], bool]:
    """(method, path, body, query, authenticated as a compliance officer)."""
    kind = draw(st.sampled_from(["login", "devices", "audit", "accounts"]))
    if kind == "login":
        return "POST", "/v1/login", draw(_bodies), {}, False
    if kind == "devices":
        return "PUT", "/v1/devices", draw(_bodies), {}, True
    if kind == "accounts":
        account = quote(draw(st.text(max_size=40)), safe="")
        return "GET", f"/v1/accounts/{account}/devices", None, {}, True
    path = draw(
        st.sampled_from(
            [
                "/v1/audit/events",
                "/v1/audit/checkpoint",
                "/v1/audit/consistency",
                "/v1/audit/export",
            ]
        )
        | st.integers(-3, 2**70).map(lambda i: f"/v1/audit/events/{i}")
    )
    return "GET", path, None, draw(_queries), True


def test_fuzzed_http_requests_never_get_a_500_or_change_accounts_or_devices(target: Target) -> None:
    guarded = ("accounts", "devices", "conversations", "conversation_members", "envelopes")
    others = tuple(t.name for t in metadata.sorted_tables if t.name not in guarded)

    async def stored() -> dict[str, list[tuple[Any, ...]]]:
        tables = await snapshot(target.server.database_url, exclude=others)
        # Queue cursors move with acknowledgements (an earlier test's may still be committing).
        tables["devices"] = [row[:-3] for row in tables["devices"]]
        return tables

    before = asyncio.run(stored())

    @settings(SOCKET_EXAMPLES, max_examples=120)
    @given(requests())
    def example(request: tuple[str, str, bytes | None, dict[str, str], bool]) -> None:
        method, path, body, query, authenticated = request
        headers = {"content-type": "application/json"}
        if authenticated:
            headers |= target.compliance.auth
        with httpx.Client(base_url=target.server.http_url, timeout=10, verify=PLAIN_HTTP) as client:
            response = client.request(method, path, content=body, params=query, headers=headers)
        assert response.status_code < 500 or response.status_code == 503, response.text
        if (
            response.status_code >= 400
            and response.headers.get("content-type") == "application/json"
        ):
            assert response.json()["error"]["code"] in WIRE_CODES

    example()
    assert asyncio.run(stored()) == before
    assert tracebacks(target.server.log()) == []


# -- raw WebSocket frames --------------------------------------------------------------------


@st.composite
def raw_frames(draw: st.DrawFn) -> bytes:
    """A client frame with any opcode, FIN and RSV1 bit, and any payload (incl. bad UTF-8)."""
    opcode = draw(
        st.sampled_from([CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]) | st.integers(0, 15)
    )
    payload = draw(
        st.binary(max_size=200)
        | st.text(max_size=100).map(str.encode)
        | st.sampled_from([b"\xff\xfe", b'{"type":"ping"}\xc3', b"\xed\xa0\x80", b"\x03\xe8bye"])
    )
    return frame(opcode, payload, fin=draw(st.booleans()), rsv1=draw(st.booleans()))


async def _run_raw(target: Target, sent: list[bytes]) -> None:
    host, port = "127.0.0.1", target.server.port
    raw = await handshake(host, port, Authorization=f"Bearer {target.carl.token}")
    try:
        assert raw.status == 101 and "sec-websocket-extensions" not in raw.headers
        await raw.recv_frame()  # ready
        await raw.send(b"".join([*sent, frame(TEXT, b'{"type":"ping"}')]))
        code = await raw.close_code(timeout=10)
    except TimeoutError:
        code = None  # still open: it answered (pong) and waits for more
    finally:
        raw.close()
    # None: the server dropped the connection after a protocol error (our unread bytes turn
    # its close into a reset). Never an internal error.
    assert code is None or code in DOCUMENTED_CLOSES or code == 1000, code


def test_raw_websocket_frames_get_protocol_closes_never_a_traceback(target: Target) -> None:
    @settings(SOCKET_EXAMPLES, max_examples=60)
    @given(st.lists(raw_frames(), min_size=1, max_size=3))
    @example([frame(TEXT, b'{"type":"ping"}\xff')])  # invalid UTF-8 in a text frame
    @example([frame(TEXT, b"\x01" * 64, rsv1=True)])  # "compressed" without negotiation
    @example([frame(TEXT, b"{", fin=False), frame(BINARY, b"}")])  # a new message mid-fragment
    def fuzz(sent: list[bytes]) -> None:
        asyncio.run(_run_raw(target, sent))

    fuzz()
    assert tracebacks(target.server.log()) == []
    asyncio.run(_still_serving(target))
