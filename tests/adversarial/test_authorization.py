"""Every role against every HTTP endpoint and WebSocket operation, from one table.

`MATRIX` is the authorization policy as the server must enforce it: one row per operation, one
column per role, each cell the outcome the real server process must produce (`ALLOWED` outcomes
grant access; anything else is a refusal, by its wire code). Each row is a test, run on SQLite
and PostgreSQL: its refused cells first, checking that no account, device, conversation,
envelope or delivery row changed, then its allowed ones. The actors: carl (client) and tess
(therapist) share conversation A; olga (client) and theo (therapist) share conversation B; tess
and cleo share conversation C, where tess granted sam (supervisor) an hour with history; cora
(compliance) and adam (admin) are in no conversation. "foreign" means an account or device of
conversation B's pair. A second compliance officer approving a request, and a supervisor's live
deliveries under a grant, need more than one request each: tests/legal and tests/e2e cover them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import ssl
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection

from securemsg.crypto.devices import certify_device, sign_device_list
from securemsg.crypto.grants import sign_grant
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.protocol import frames
from securemsg.protocol.devices import DeviceEntry
from securemsg.protocol.frames import ATTACH_PURPOSE
from securemsg.server import compliance, grants_http, http, legal_http
from securemsg.storage.models import metadata
from tests.adversarial.actors import provision_now, serving
from tests.support.db import BACKENDS, snapshot
from tests.support.peer import Peer
from tests.support.server import ServerProcess
from tests.support.ws import open_socket, recv_json, until_closed

ROLES = ("client", "therapist", "supervisor", "compliance", "admin", "anonymous")
# Outcomes: an HTTP status for success, a wire error code (with its documented HTTP status) for an
# HTTP refusal, a frame type or error code on the WebSocket, "close <code>" when the socket closes.
OK, NO_CONTENT, READY, PONG, ATTACHED, ACCEPTED = (
    "200",
    "204",
    "ready",
    "pong",
    "attached",
    "accepted",
)
AUTH_REQUIRED, LOGIN_FAILED, FORBIDDEN = "auth_required", "login_failed", "forbidden"
NOT_FOUND, BAD_DEVICE, BAD_SIGNATURE = "not_found", "bad_device", "bad_signature"
NOT_ATTACHED, NOT_MEMBER, BAD_RECIPIENTS = "not_attached", "not_member", "bad_recipients"
WRONG_SENDER, BAD_FRAME, CLOSE_4401, CLOSE_4402 = (
    "wrong_sender",
    "bad_frame",
    "close 4401",
    "close 4402",
)
CREATED, NO_GRANT, BAD_GRANT, WRONG_STATE = "201", "no_grant", "bad_grant", "wrong_state"
ALLOWED = frozenset({OK, CREATED, NO_CONTENT, READY, PONG, ATTACHED, ACCEPTED})

# fmt: off
MATRIX: dict[str, tuple[str, str, str, str, str, str]] = {
    # operation (the function that performs it is in OPERATIONS below)
    #        client         therapist      supervisor     compliance     admin          anonymous
    "GET /healthz":
        (OK,            OK,            OK,            OK,            OK,            OK),
    "GET /v1/audit/key":
        (OK,            OK,            OK,            OK,            OK,            OK),
    "POST /v1/login: own credentials (anonymous: a guess at carl's)":
        (OK,            OK,            OK,            OK,            OK,            LOGIN_FAILED),
    "POST /v1/logout: a fresh session of one's own":
        (NO_CONTENT,    NO_CONTENT,    NO_CONTENT,    NO_CONTENT,    NO_CONTENT,    AUTH_REQUIRED),
    "GET /v1/me":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "GET /v1/conversations: lists exactly the caller's own":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "PUT /v1/devices: own newer device list":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "PUT /v1/devices: a foreign account's signed list and certificates":
        (BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    AUTH_REQUIRED),
    "PUT /v1/devices: own list with a foreign device's certificate":
        (BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, AUTH_REQUIRED),
    "PUT /v1/devices: own list claiming a foreign device id":
        (BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    AUTH_REQUIRED),
    "PUT /v1/devices: own list under a new identity key":
        (BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: own account":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: conversation A's other member (or carl)":
        (OK,            OK,            NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: cleo (conversation C, under sam's grant)":
        (NOT_FOUND,     OK,            OK,            NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: sam (the supervisor granted C)":
        (NOT_FOUND,     OK,            OK,            NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: a foreign account":
        (NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: an unknown account id":
        (NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/accounts/{account_id}/devices: a malformed account id":
        (NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/audit/events":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/audit/events/{index}":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/audit/checkpoint":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/audit/consistency":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/audit/export":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/conversations/{conversation_id}/grants: conversation A, a forged record":
        (FORBIDDEN,     BAD_GRANT,     FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/conversations/{conversation_id}/grants: conversation C (sam's grant)":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "GET /v1/conversations/{conversation_id}/history: conversation C (sam's grant)":
        (NOT_FOUND,     OK,            OK,            NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/conversations/{conversation_id}/history: conversation A (no grant)":
        (OK,            OK,            NO_GRANT,      NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/conversations/{conversation_id}/history: conversation B":
        (NOT_FOUND,     NOT_FOUND,     NO_GRANT,      NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "POST /v1/grants/{grant_id}/revoke: a fresh grant of tess's to sam in C":
        (NOT_FOUND,     OK,            NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "POST /v1/grants/{grant_id}/key-shares: sam's grant in C, no shares":
        (NOT_FOUND,     OK,            NOT_FOUND,     NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "GET /v1/grants/{grant_id}/key-shares: sam's grant in C, for the caller's device":
        (NOT_FOUND,     NOT_FOUND,     OK,            NOT_FOUND,     NOT_FOUND,     AUTH_REQUIRED),
    "POST /v1/legal/requests: a well-formed request":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     CREATED,       FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/legal/requests":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/legal/requests/{id}: one cora filed":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/requests/{id}/approve: by the officer who filed it":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/requests/{id}/deny: by the officer who filed it":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/requests/{id}/export: a request nobody approved":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     WRONG_STATE,   FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/legal/requests/{id}/bundle: a request never exported":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     WRONG_STATE,   FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/requests/{id}/close: a request of one's own":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/holds: a hold on olga's account":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     CREATED,       FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/legal/holds":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "POST /v1/legal/holds/{id}/release: a fresh hold":
        (FORBIDDEN,     FORBIDDEN,     FORBIDDEN,     OK,            FORBIDDEN,     AUTH_REQUIRED),
    "GET /v1/disclosures":
        (OK,            OK,            OK,            OK,            OK,            AUTH_REQUIRED),
    "WS auth: own token (anonymous: a forged one)":
        (READY,         READY,         READY,         READY,         READY,         CLOSE_4401),
    "WS ping":
        (PONG,          PONG,          PONG,          PONG,          PONG,          CLOSE_4402),
    "WS attach: own device":
        (ATTACHED,      ATTACHED,      ATTACHED,      ATTACHED,      ATTACHED,      CLOSE_4402),
    "WS attach: own device, signature over another challenge":
        (BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE, CLOSE_4402),
    "WS attach: a foreign device, signed with that device's key":
        (BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    BAD_DEVICE,    CLOSE_4402),
    "WS send: before attaching":
        (NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  CLOSE_4402),
    "WS send: into conversation A":
        (ACCEPTED,      ACCEPTED,      NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    CLOSE_4402),
    "WS send: into conversation B":
        (NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    CLOSE_4402),
    "WS send: into an unknown conversation":
        (NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    CLOSE_4402),
    "WS send: into conversation A, wrapped to a foreign device":
        (BAD_RECIPIENTS,BAD_RECIPIENTS,NOT_MEMBER,    NOT_MEMBER,    NOT_MEMBER,    CLOSE_4402),
    "WS send: signed as another account":
        (WRONG_SENDER,  WRONG_SENDER,  WRONG_SENDER,  WRONG_SENDER,  WRONG_SENDER,  CLOSE_4402),
    "WS ack: before attaching":
        (NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  NOT_ATTACHED,  CLOSE_4402),
    "WS ack: beyond the last delivered seq":
        (BAD_FRAME,     BAD_FRAME,     BAD_FRAME,     BAD_FRAME,     BAD_FRAME,     CLOSE_4402),
}
# fmt: on
# The coverage test below fails as soon as a route appears without a row here.

# Every request is plain HTTP to 127.0.0.1: an empty TLS context spares each client the ~30 ms
# of loading CA certificates.
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
# The HTTP status each refusal code must come with (docs/protocol.md §5).
STATUS = {
    "auth_required": 401,
    "login_failed": 401,
    "forbidden": 403,
    "not_found": 404,
    "bad_device": 400,
    "bad_signature": 400,
    "bad_grant": 400,
    "no_grant": 403,
    "wrong_state": 409,
}
# Refusals must leave these tables exactly as they were (audit tables record refusals, and
# sessions record activity, so they are left out).
GUARDED = (
    "accounts",
    "devices",
    "conversations",
    "conversation_members",
    "envelopes",
    "deliveries",
)


@dataclasses.dataclass
class World:
    server: ServerProcess
    actors: dict[str, Peer]  # by role
    foreign: Peer  # olga, client in conversation B
    foreign_therapist: Peer  # theo
    granted_client: Peer  # cleo, client in conversation C
    conversation_a: uuid.UUID
    conversation_b: uuid.UUID
    conversation_c: uuid.UUID  # tess and cleo; sam holds a grant with history here
    grant_c: uuid.UUID
    legal_request: str  # filed by cora at the start
    versions: dict[str, int]  # each account's device list version
    spare_grants: list[uuid.UUID] = dataclasses.field(default_factory=list)

    def peer_of(self, actor: Peer) -> Peer:
        """The account whose devices `actor` may read as a conversation partner (or tries to)."""
        if actor is self.actors["client"]:
            return self.actors["therapist"]
        return self.actors["client"]

    def own_conversations(self, actor: Peer) -> set[str]:
        if actor is self.actors["therapist"]:
            return {str(self.conversation_a), str(self.conversation_c)}
        return {str(self.conversation_a)} if actor is self.actors["client"] else set()


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp(f"matrix-{request.param}")
    # Many logins from 127.0.0.1 are part of the matrix, not an attack.
    with serving(directory, request.param, login_attempts_per_address=10_000) as server:
        names = {
            "carl": "client",
            "tess": "therapist",
            "sam": "supervisor",
            "cora": "compliance",
            "adam": "admin",
            "olga": "client",
            "theo": "therapist",
            "cleo": "client",
        }
        conversation_a, conversation_b, conversation_c = provision_now(
            server, names, [("tess", "carl"), ("theo", "olga"), ("tess", "cleo")]
        )
        peers = {name: Peer(server, name).login() for name in names}
        for peer in peers.values():
            response = peer.register()
            assert response.status_code == 200, response.text
        by_role = {role: peers[name] for name, role in list(names.items())[:5]}
        world = World(
            server=server,
            actors=by_role,
            foreign=peers["olga"],
            foreign_therapist=peers["theo"],
            granted_client=peers["cleo"],
            conversation_a=conversation_a,
            conversation_b=conversation_b,
            conversation_c=conversation_c,
            grant_c=uuid.UUID(int=0),
            legal_request="",
            versions=dict.fromkeys(names, 1),
        )
        world.grant_c = _grant(world)
        world.legal_request = _file_request(world)
        _wait_for_checkpoint(world)
        yield world
        assert "Traceback" not in server.log()


def _wait_for_checkpoint(world: World) -> None:
    """The audit integrator signs its first checkpoint within a second or so of startup."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = httpx.get(
            world.server.http_url + "/v1/audit/checkpoint",
            headers=world.actors["compliance"].auth,
            timeout=10,
        )
        if response.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("no audit checkpoint was signed")


def _grant(world: World) -> uuid.UUID:
    """tess grants sam an hour of conversation C, history included (through the API)."""
    tess, sam = world.actors["therapist"], world.actors["supervisor"]
    assert tess.account_id is not None and sam.account_id is not None
    grant_id = uuid.uuid4()
    now_ms = int(time.time() * 1000)
    record = sign_grant(
        tess.device,
        grant_id=grant_id.bytes,
        conversation_id=world.conversation_c.bytes,
        therapist_account=tess.account_id.bytes,
        therapist_device=tess.device_id.bytes,
        supervisor_account=sam.account_id.bytes,
        from_ms=now_ms - 1000,
        until_ms=now_ms + 3_600_000,
        include_history=True,
    )
    response = httpx.post(
        f"{world.server.http_url}/v1/conversations/{world.conversation_c}/grants",
        json={"grant": frames.b64(record)},
        headers=tess.auth,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return grant_id


def _created_by_compliance(world: World, path: str, body: dict[str, Any]) -> str:
    """cora POSTs `body` to `path`; the id of what was created."""
    response = httpx.post(
        world.server.http_url + path, json=body, headers=world.actors["compliance"].auth, timeout=10
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _file_request(world: World) -> str:
    """cora files a legal request about olga's account (through the API)."""
    return _created_by_compliance(world, "/v1/legal/requests", _legal_body(world))


def _legal_body(world: World) -> dict[str, Any]:
    return {
        "authority": "District Court",
        "reference": f"case {uuid.uuid4().hex[:8]}",
        "legal_basis": "court order",
        "scope": {"account": str(world.foreign.account_id)},
    }


# -- observing outcomes ----------------------------------------------------------------------


def _outcome(response: httpx.Response) -> str:
    if response.status_code < 300:
        return str(response.status_code)
    code = str(response.json()["error"]["code"])
    if response.status_code != STATUS.get(code):
        return f"{response.status_code} {code}"  # an undocumented pairing fails the comparison
    return code


async def _http(
    world: World, actor: Peer | None, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    headers = {} if actor is None else actor.auth
    async with httpx.AsyncClient(
        base_url=world.server.http_url, timeout=10, verify=PLAIN_HTTP
    ) as client:
        return await client.request(method, path, headers=headers, **kwargs)


async def _reply(ws: ClientConnection, *types: str) -> dict[str, Any]:
    """The next frame of one of `types`, skipping deliveries and other pushes."""
    while True:
        frame = await recv_json(ws)
        if frame["type"] in types:
            return frame


def _ws_outcome(frame: dict[str, Any]) -> str:
    return str(frame["code"]) if frame["type"] == "error" else str(frame["type"])


def _attach_frame(device_id: uuid.UUID, device: DeviceKeys, challenge: bytes) -> str:
    signature = device.sign(ATTACH_PURPOSE, challenge + device_id.bytes)
    return json.dumps(
        {"type": "attach", "device": str(device_id), "signature": frames.b64(signature)}
    )


@contextlib.asynccontextmanager
async def _socket(
    world: World, actor: Peer, *, attach: bool = True
) -> AsyncIterator[tuple[ClientConnection, bytes]]:
    """An authenticated socket (attached to the actor's own device unless `attach` is False)."""
    ws = await open_socket(world.server.ws_url, token=actor.token)
    try:
        ready = await recv_json(ws)
        assert ready["type"] == "ready", ready
        challenge = base64.b64decode(ready["challenge"])
        if attach:
            await ws.send(_attach_frame(actor.device_id, actor.device, challenge))
            assert (await _reply(ws, "attached", "error"))["type"] == "attached"
        yield ws, challenge
    finally:
        await ws.close()


async def _anonymous(world: World, frame: str) -> str:
    """Send `frame` as the first frame of a socket that never authenticated."""
    ws = await open_socket(world.server.ws_url)
    await ws.send(frame)
    code, _ = await until_closed(ws)
    return f"close {code}"


async def _send(world: World, actor: Peer | None, envelope: bytes) -> str:
    frame = json.dumps({"type": "send", "envelope": frames.b64(envelope)})
    if actor is None:
        return await _anonymous(world, frame)
    async with _socket(world, actor) as (ws, _):
        await ws.send(frame)
        return _ws_outcome(await _reply(ws, "accepted", "error"))


def _keys(*peers: Peer) -> dict[uuid.UUID, bytes]:
    return {peer.device_id: peer.device.encryption_key for peer in peers}


# -- device lists ----------------------------------------------------------------------------


def _device_body(
    peer: Peer,
    version: int,
    *,
    identity: IdentityKey | None = None,
    extra: tuple[tuple[uuid.UUID, DeviceKeys], ...] = (),
    certificates: list[bytes] | None = None,
) -> dict[str, Any]:
    """A PUT /v1/devices body for `peer`'s account, signed by `identity` (default: its own)."""
    assert peer.account_id is not None
    identity = identity or peer.identity
    now_ms = int(time.time() * 1000)
    devices = [(peer.device_id, peer.device), *extra]
    entries = [DeviceEntry(d.bytes, k.signing_key, k.encryption_key) for d, k in devices]
    device_list = sign_device_list(
        identity,
        account_id=peer.account_id.bytes,
        list_version=version,
        devices=entries,
        created_ms=now_ms,
    )
    if certificates is None:
        certificates = [
            certify_device(
                identity,
                account_id=peer.account_id.bytes,
                device_id=d.bytes,
                device=k.public_keys,
                created_ms=now_ms,
            )
            for d, k in devices
        ]
    return {
        "identity_key": frames.b64(identity.public_key),
        "device_list": frames.b64(device_list),
        "certificates": [frames.b64(c) for c in certificates],
    }


async def _put_devices(world: World, actor: Peer | None, body: dict[str, Any]) -> str:
    response = await _http(world, actor, "PUT", "/v1/devices", json=body)
    if response.status_code == 200 and actor is not None:
        world.versions[actor.username] += 1
    return _outcome(response)


def _next_version(world: World, actor: Peer | None) -> int:
    return 1 + world.versions[(actor or world.actors["client"]).username]


# -- the operations --------------------------------------------------------------------------

Operation = Callable[[World, Peer | None], Awaitable[str]]


async def healthz(world: World, actor: Peer | None) -> str:
    return _outcome(await _http(world, actor, "GET", "/healthz"))


async def audit_key(world: World, actor: Peer | None) -> str:
    return _outcome(await _http(world, actor, "GET", "/v1/audit/key"))


async def login(world: World, actor: Peer | None) -> str:
    username, password = (
        ("carl", "a guess at the password") if actor is None else (actor.username, actor.password)
    )
    body = {"username": username, "password": password}
    return _outcome(await _http(world, None, "POST", "/v1/login", json=body))


async def logout(world: World, actor: Peer | None) -> str:
    if actor is None:
        return _outcome(await _http(world, None, "POST", "/v1/logout"))
    fresh = Peer(world.server, actor.username).login()
    outcome = _outcome(await _http(world, fresh, "POST", "/v1/logout"))
    if (await _http(world, fresh, "GET", "/v1/me")).status_code != 401:
        return f"{outcome}, yet the token still works"
    return outcome


async def me(world: World, actor: Peer | None) -> str:
    response = await _http(world, actor, "GET", "/v1/me")
    if actor is not None and response.status_code == 200:
        assert response.json()["account"] == str(actor.account_id)
    return _outcome(response)


async def conversations(world: World, actor: Peer | None) -> str:
    response = await _http(world, actor, "GET", "/v1/conversations")
    if actor is not None and response.status_code == 200:
        listed = {c["id"] for c in response.json()["conversations"]}
        if listed != world.own_conversations(actor):
            return f"200 listing {sorted(listed)}"
    return _outcome(response)


async def devices_newer(world: World, actor: Peer | None) -> str:
    target = actor or world.actors["client"]
    return await _put_devices(world, actor, _device_body(target, _next_version(world, actor)))


async def devices_foreign_list(world: World, actor: Peer | None) -> str:
    return await _put_devices(world, actor, _device_body(world.foreign, 1))


async def devices_foreign_certificate(world: World, actor: Peer | None) -> str:
    target = actor or world.actors["client"]
    olga = world.foreign
    assert olga.account_id is not None
    olga_certificate = certify_device(
        olga.identity,
        account_id=olga.account_id.bytes,
        device_id=olga.device_id.bytes,
        device=olga.device.public_keys,
        created_ms=int(time.time() * 1000),
    )
    body = _device_body(
        target,
        _next_version(world, actor),
        extra=((olga.device_id, olga.device),),
        certificates=[olga_certificate],
    )
    return await _put_devices(world, actor, body)


async def devices_foreign_id(world: World, actor: Peer | None) -> str:
    target = actor or world.actors["client"]
    extra = ((world.foreign.device_id, DeviceKeys.generate()),)
    body = _device_body(target, _next_version(world, actor), extra=extra)
    return await _put_devices(world, actor, body)


async def devices_new_identity(world: World, actor: Peer | None) -> str:
    target = actor or world.actors["client"]
    body = _device_body(target, _next_version(world, actor), identity=IdentityKey.generate())
    return await _put_devices(world, actor, body)


async def _account_devices(world: World, actor: Peer | None, account: str) -> str:
    response = await _http(world, actor, "GET", f"/v1/accounts/{account}/devices")
    if response.status_code == 200:
        assert response.json()["account"] == account
    return _outcome(response)


async def devices_of_self(world: World, actor: Peer | None) -> str:
    target = actor or world.actors["client"]
    return await _account_devices(world, actor, str(target.account_id))


async def devices_of_peer(world: World, actor: Peer | None) -> str:
    target = world.actors["client"] if actor is None else world.peer_of(actor)
    return await _account_devices(world, actor, str(target.account_id))


async def devices_of_granted_client(world: World, actor: Peer | None) -> str:
    return await _account_devices(world, actor, str(world.granted_client.account_id))


async def devices_of_supervisor(world: World, actor: Peer | None) -> str:
    return await _account_devices(world, actor, str(world.actors["supervisor"].account_id))


async def devices_of_foreign(world: World, actor: Peer | None) -> str:
    return await _account_devices(world, actor, str(world.foreign.account_id))


async def devices_of_unknown(world: World, actor: Peer | None) -> str:
    return await _account_devices(world, actor, str(uuid.uuid4()))


async def devices_of_malformed(world: World, actor: Peer | None) -> str:
    return await _account_devices(world, actor, "not-a-uuid")


def _audit(path: str) -> Operation:
    async def operation(world: World, actor: Peer | None) -> str:
        return _outcome(await _http(world, actor, "GET", path))

    return operation


async def grant_forged(world: World, actor: Peer | None) -> str:
    body = {"grant": frames.b64(os.urandom(200))}
    path = f"/v1/conversations/{world.conversation_a}/grants"
    return _outcome(await _http(world, actor, "POST", path, json=body))


async def grants_of_c(world: World, actor: Peer | None) -> str:
    response = await _http(world, actor, "GET", f"/v1/conversations/{world.conversation_c}/grants")
    if actor is not None and response.status_code == 200:
        listed = {g["id"] for g in response.json()["grants"]}
        sees = actor in (world.actors["therapist"], world.actors["supervisor"])
        if sees != (str(world.grant_c) in listed) or (not sees and listed):
            return f"200 listing {sorted(listed)}"
    return _outcome(response)


def _history(conversation: Callable[[World], uuid.UUID]) -> Operation:
    async def operation(world: World, actor: Peer | None) -> str:
        path = f"/v1/conversations/{conversation(world)}/history"
        return _outcome(await _http(world, actor, "GET", path))

    return operation


async def revoke_fresh_grant(world: World, actor: Peer | None) -> str:
    grant_id = world.spare_grants.pop()
    return _outcome(await _http(world, actor, "POST", f"/v1/grants/{grant_id}/revoke"))


async def _spare_grants(world: World) -> None:
    """One fresh grant per role to revoke (made before the row's "nothing changed" snapshot)."""
    world.spare_grants = [_grant(world) for _ in ROLES]


async def add_no_key_shares(world: World, actor: Peer | None) -> str:
    path = f"/v1/grants/{world.grant_c}/key-shares"
    return _outcome(await _http(world, actor, "POST", path, json={"shares": []}))


async def fetch_key_shares(world: World, actor: Peer | None) -> str:
    device = (actor or world.actors["supervisor"]).device_id
    path = f"/v1/grants/{world.grant_c}/key-shares"
    return _outcome(await _http(world, actor, "GET", path, params={"device": str(device)}))


def _legal(
    method: str,
    path: Callable[[World, Peer | None], str],
    body: Callable[[World], dict[str, Any]] | None = None,
) -> Operation:
    async def operation(world: World, actor: Peer | None) -> str:
        extra = {} if body is None else {"json": body(world)}
        return _outcome(await _http(world, actor, method, path(world, actor), **extra))

    return operation


def _hold_body(world: World) -> dict[str, Any]:
    return {"account": str(world.foreign.account_id), "reason": "litigation"}


def _fresh_request(world: World, actor: Peer | None) -> str:
    """A request of its own for the compliance officer (closing it changes it); the shared one
    for the others, who are refused before it is read."""
    if actor is world.actors["compliance"]:
        return f"/v1/legal/requests/{_file_request(world)}/close"
    return f"/v1/legal/requests/{world.legal_request}/close"


def _fresh_hold(world: World, actor: Peer | None) -> str:
    hold = _created_by_compliance(world, "/v1/legal/holds", _hold_body(world))
    return f"/v1/legal/holds/{hold}/release"


async def ws_auth(world: World, actor: Peer | None) -> str:
    if actor is None:
        return await _anonymous(world, json.dumps({"type": "auth", "token": "A" * 43}))
    ws = await open_socket(world.server.ws_url)
    try:
        await ws.send(json.dumps({"type": "auth", "token": actor.token}))
        return _ws_outcome(await recv_json(ws))
    finally:
        await ws.close()


async def ws_ping(world: World, actor: Peer | None) -> str:
    if actor is None:
        return await _anonymous(world, json.dumps({"type": "ping"}))
    async with _socket(world, actor, attach=False) as (ws, _):
        await ws.send(json.dumps({"type": "ping"}))
        return _ws_outcome(await _reply(ws, "pong", "error"))


async def _attach(world: World, actor: Peer | None, make: Callable[[Peer, bytes], str]) -> str:
    if actor is None:
        return await _anonymous(world, make(world.actors["client"], os.urandom(32)))
    async with _socket(world, actor, attach=False) as (ws, challenge):
        await ws.send(make(actor, challenge))
        return _ws_outcome(await _reply(ws, "attached", "error"))


async def attach_own(world: World, actor: Peer | None) -> str:
    return await _attach(
        world, actor, lambda peer, challenge: _attach_frame(peer.device_id, peer.device, challenge)
    )


async def attach_stale_challenge(world: World, actor: Peer | None) -> str:
    return await _attach(
        world,
        actor,
        lambda peer, _challenge: _attach_frame(peer.device_id, peer.device, os.urandom(32)),
    )


async def attach_foreign(world: World, actor: Peer | None) -> str:
    olga = world.foreign
    return await _attach(
        world, actor, lambda _peer, challenge: _attach_frame(olga.device_id, olga.device, challenge)
    )


async def send_unattached(world: World, actor: Peer | None) -> str:
    carl, tess = world.actors["client"], world.actors["therapist"]
    envelope = carl.seal(world.conversation_a, _keys(tess), "hello")
    frame = json.dumps({"type": "send", "envelope": frames.b64(envelope)})
    if actor is None:
        return await _anonymous(world, frame)
    async with _socket(world, actor, attach=False) as (ws, _):
        await ws.send(frame)
        return _ws_outcome(await _reply(ws, "accepted", "error"))


async def send_conversation_a(world: World, actor: Peer | None) -> str:
    carl, tess = world.actors["client"], world.actors["therapist"]
    sender = actor or carl
    recipients = _keys(*(p for p in (carl, tess) if p is not sender))
    return await _send(world, actor, sender.seal(world.conversation_a, recipients, "hello"))


async def send_conversation_b(world: World, actor: Peer | None) -> str:
    sender = actor or world.actors["client"]
    recipients = _keys(world.foreign, world.foreign_therapist)
    return await _send(world, actor, sender.seal(world.conversation_b, recipients, "hello"))


async def send_unknown_conversation(world: World, actor: Peer | None) -> str:
    sender = actor or world.actors["client"]
    envelope = sender.seal(uuid.uuid4(), _keys(world.actors["client"]), "hello")
    return await _send(world, actor, envelope)


async def send_foreign_wrap(world: World, actor: Peer | None) -> str:
    carl, tess = world.actors["client"], world.actors["therapist"]
    sender = actor or carl
    recipients = _keys(*(p for p in (carl, tess) if p is not sender), world.foreign)
    return await _send(world, actor, sender.seal(world.conversation_a, recipients, "hello"))


async def send_forged_sender(world: World, actor: Peer | None) -> str:
    carl, tess = world.actors["client"], world.actors["therapist"]
    sender = actor or carl
    impersonated = tess if sender is carl else carl
    envelope = sender.seal(
        world.conversation_a, _keys(carl, tess), "hello", sender_account=impersonated.account_id
    )
    return await _send(world, actor, envelope)


async def _ack(world: World, actor: Peer | None, seq: int, *, attach: bool) -> str:
    frame = json.dumps({"type": "ack", "seq": seq})
    if actor is None:
        return await _anonymous(world, frame)
    async with _socket(world, actor, attach=attach) as (ws, _):
        await ws.send(frame)
        await ws.send(json.dumps({"type": "ping"}))  # an ack has no reply unless refused
        return _ws_outcome(await _reply(ws, "error", "pong"))


async def ack_unattached(world: World, actor: Peer | None) -> str:
    return await _ack(world, actor, 1, attach=False)


async def ack_beyond(world: World, actor: Peer | None) -> str:
    return await _ack(world, actor, 10**12, attach=True)


OPERATIONS: dict[str, Operation] = {
    "GET /healthz": healthz,
    "GET /v1/audit/key": audit_key,
    "POST /v1/login: own credentials (anonymous: a guess at carl's)": login,
    "POST /v1/logout: a fresh session of one's own": logout,
    "GET /v1/me": me,
    "GET /v1/conversations: lists exactly the caller's own": conversations,
    "PUT /v1/devices: own newer device list": devices_newer,
    "PUT /v1/devices: a foreign account's signed list and certificates": devices_foreign_list,
    "PUT /v1/devices: own list with a foreign device's certificate": devices_foreign_certificate,
    "PUT /v1/devices: own list claiming a foreign device id": devices_foreign_id,
    "PUT /v1/devices: own list under a new identity key": devices_new_identity,
    "GET /v1/accounts/{account_id}/devices: own account": devices_of_self,
    "GET /v1/accounts/{account_id}/devices: conversation A's other member (or carl)": (
        devices_of_peer
    ),
    "GET /v1/accounts/{account_id}/devices: cleo (conversation C, under sam's grant)": (
        devices_of_granted_client
    ),
    "GET /v1/accounts/{account_id}/devices: sam (the supervisor granted C)": devices_of_supervisor,
    "GET /v1/accounts/{account_id}/devices: a foreign account": devices_of_foreign,
    "GET /v1/accounts/{account_id}/devices: an unknown account id": devices_of_unknown,
    "GET /v1/accounts/{account_id}/devices: a malformed account id": devices_of_malformed,
    "GET /v1/audit/events": _audit("/v1/audit/events"),
    "GET /v1/audit/events/{index}": _audit("/v1/audit/events/0"),
    "GET /v1/audit/checkpoint": _audit("/v1/audit/checkpoint"),
    "GET /v1/audit/consistency": _audit("/v1/audit/consistency?from=1"),
    "GET /v1/audit/export": _audit("/v1/audit/export"),
    "POST /v1/conversations/{conversation_id}/grants: conversation A, a forged record": (
        grant_forged
    ),
    "GET /v1/conversations/{conversation_id}/grants: conversation C (sam's grant)": grants_of_c,
    "GET /v1/conversations/{conversation_id}/history: conversation C (sam's grant)": _history(
        lambda w: w.conversation_c
    ),
    "GET /v1/conversations/{conversation_id}/history: conversation A (no grant)": _history(
        lambda w: w.conversation_a
    ),
    "GET /v1/conversations/{conversation_id}/history: conversation B": _history(
        lambda w: w.conversation_b
    ),
    "POST /v1/grants/{grant_id}/revoke: a fresh grant of tess's to sam in C": revoke_fresh_grant,
    "POST /v1/grants/{grant_id}/key-shares: sam's grant in C, no shares": add_no_key_shares,
    "GET /v1/grants/{grant_id}/key-shares: sam's grant in C, for the caller's device": (
        fetch_key_shares
    ),
    "POST /v1/legal/requests: a well-formed request": _legal(
        "POST", lambda w, a: "/v1/legal/requests", _legal_body
    ),
    "GET /v1/legal/requests": _legal("GET", lambda w, a: "/v1/legal/requests"),
    "GET /v1/legal/requests/{id}: one cora filed": _legal(
        "GET", lambda w, a: f"/v1/legal/requests/{w.legal_request}"
    ),
    "POST /v1/legal/requests/{id}/approve: by the officer who filed it": _legal(
        "POST", lambda w, a: f"/v1/legal/requests/{w.legal_request}/approve"
    ),
    "POST /v1/legal/requests/{id}/deny: by the officer who filed it": _legal(
        "POST", lambda w, a: f"/v1/legal/requests/{w.legal_request}/deny"
    ),
    "POST /v1/legal/requests/{id}/export: a request nobody approved": _legal(
        "POST", lambda w, a: f"/v1/legal/requests/{w.legal_request}/export"
    ),
    "GET /v1/legal/requests/{id}/bundle: a request never exported": _legal(
        "GET", lambda w, a: f"/v1/legal/requests/{w.legal_request}/bundle"
    ),
    "POST /v1/legal/requests/{id}/close: a request of one's own": _legal("POST", _fresh_request),
    "POST /v1/legal/holds: a hold on olga's account": _legal(
        "POST", lambda w, a: "/v1/legal/holds", _hold_body
    ),
    "GET /v1/legal/holds": _legal("GET", lambda w, a: "/v1/legal/holds"),
    "POST /v1/legal/holds/{id}/release: a fresh hold": _legal("POST", _fresh_hold),
    "GET /v1/disclosures": _legal("GET", lambda w, a: "/v1/disclosures"),
    "WS auth: own token (anonymous: a forged one)": ws_auth,
    "WS ping": ws_ping,
    "WS attach: own device": attach_own,
    "WS attach: own device, signature over another challenge": attach_stale_challenge,
    "WS attach: a foreign device, signed with that device's key": attach_foreign,
    "WS send: before attaching": send_unattached,
    "WS send: into conversation A": send_conversation_a,
    "WS send: into conversation B": send_conversation_b,
    "WS send: into an unknown conversation": send_unknown_conversation,
    "WS send: into conversation A, wrapped to a foreign device": send_foreign_wrap,
    "WS send: signed as another account": send_forged_sender,
    "WS ack: before attaching": ack_unattached,
    "WS ack: beyond the last delivered seq": ack_beyond,
}


# Setup some rows need before their "nothing changed" snapshot is taken.
PREPARE: dict[str, Callable[[World], Awaitable[None]]] = {
    "POST /v1/grants/{grant_id}/revoke: a fresh grant of tess's to sam in C": _spare_grants,
}


async def _guarded(world: World) -> dict[str, list[tuple[Any, ...]]]:
    others = tuple(t.name for t in metadata.sorted_tables if t.name not in GUARDED)
    return await snapshot(world.server.database_url, exclude=others)


@pytest.mark.parametrize("operation", list(MATRIX))
async def test_each_role_gets_exactly_the_access_the_matrix_grants(
    world: World, operation: str
) -> None:
    """One row: every refused cell first (nothing stored may change), then every allowed one."""
    expected = dict(zip(ROLES, MATRIX[operation], strict=True))
    refused = [role for role in ROLES if expected[role] not in ALLOWED]
    observed: dict[str, str] = {}
    if operation in PREPARE:
        await PREPARE[operation](world)
    before = await _guarded(world)
    for role in refused:
        observed[role] = await OPERATIONS[operation](world, world.actors.get(role))
    assert await _guarded(world) == before, "a refused operation changed stored state"
    for role in ROLES:
        if role not in refused:
            observed[role] = await OPERATIONS[operation](world, world.actors.get(role))
    assert {role: observed[role] for role in ROLES} == expected


def test_every_endpoint_and_client_frame_has_a_row_in_the_matrix() -> None:
    routes = [
        route
        for route in (
            *http.routes(),
            *compliance.routes(),
            *grants_http.routes(),
            *legal_http.routes(),
        )
        if isinstance(route, Route) and route.methods
    ]
    served = {
        f"{method} {route.path}"
        for route in routes
        for method in route.methods or ()
        if method != "HEAD"
    } | {"GET /healthz"}
    covered = {operation.split(":")[0] for operation in MATRIX}
    assert served <= covered, f"no matrix row for {sorted(served - covered)}"
    frame_types = {cls.type for cls in typing.get_args(frames.ClientFrame)}
    ws_rows = {operation.split(":")[0].removeprefix("WS ") for operation in MATRIX}
    assert frame_types <= ws_rows, f"no matrix row for frames {sorted(frame_types - ws_rows)}"
    assert set(MATRIX) == set(OPERATIONS)


def test_every_matrix_cell_is_an_observable_outcome() -> None:
    """Each row has one cell per role, and each cell is an outcome the tests can observe."""
    observable = ALLOWED | set(STATUS) | {"close 4401", "close 4402"}
    observable |= {
        "not_member",
        "bad_recipients",
        "wrong_sender",
        "not_attached",
        "bad_frame",
        "bad_device",
        "bad_signature",
    }
    for operation, cells in MATRIX.items():
        assert len(cells) == len(ROLES), operation
        assert set(cells) <= observable, (operation, set(cells) - observable)
