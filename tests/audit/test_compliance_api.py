"""The compliance API against the real server: what is recorded, who may read it, and proofs an
outsider checks with nothing but the published verifier key."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from securemsg.audit.bundle import read_records, verify_bundle
from securemsg.audit.checkpoint import open_checkpoint
from securemsg.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from securemsg.audit.note import NoteVerifier
from tests.audit.tamper import integrated
from tests.support.db import snapshot
from tests.support.peer import Peer
from tests.support.server import ServerProcess, running_server

MARKER = "MARKER-audit-9c1e-password"
ENDPOINTS = [
    "/v1/audit/events",
    "/v1/audit/events/0",
    "/v1/audit/checkpoint",
    "/v1/audit/consistency?from=1",
    "/v1/audit/export?format=csv",
]


class Client:
    def __init__(self, server: ServerProcess, username: str, password: str | None = None) -> None:
        self.server = server
        self.token = (
            server.login(username) if password is None else server.login(username, password)
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            self.server.http_url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}", "X-Request-ID": "req-test-1"},
            timeout=30,
        )

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/v1/audit/events", **params)
        assert response.status_code == 200, response.text
        return list(response.json()["events"])


def verifier(server: ServerProcess) -> NoteVerifier:
    response = httpx.get(server.http_url + "/v1/audit/key", timeout=10)
    assert response.status_code == 200
    return NoteVerifier.parse(response.text.splitlines()[0])


def b64s(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


@pytest.fixture
def people(server: ServerProcess) -> ServerProcess:
    server.create_account("cora", "compliance")
    server.create_account("carl", "client")
    return server


def login_attempt(server: ServerProcess, username: str, password: str) -> int:
    response = httpx.post(
        server.http_url + "/v1/login", json={"username": username, "password": password}, timeout=10
    )
    return response.status_code


async def test_officer_finds_a_clients_events_and_proves_one_with_the_published_key(
    people: ServerProcess,
) -> None:
    Client(people, "carl")
    assert login_attempt(people, "carl", MARKER) == 401
    cora = Client(people, "cora")
    await integrated(people.database_url)
    key = verifier(people)

    found = cora.events(client="carl")
    assert [e["action"] for e in found] == ["account.created", "login", "login.failed"]
    login = found[1]
    assert login["actor_name"] == "carl" and login["actor_role"] == "client"
    assert login["purpose"] == "authentication" and login["outcome"] == "success"
    assert login["address"] == "127.0.0.1" and login["resource"].startswith("session:")
    assert found[2]["details"] == {"reason": "wrong_password"}

    proven = cora.get(f"/v1/audit/events/{login['index']}")
    assert proven.status_code == 200, proven.text
    body = proven.json()
    checkpoint = open_checkpoint(body["checkpoint"], key)
    leaf = base64.b64decode(body["leaf"])
    verify_inclusion(
        leaf_hash(leaf),
        body["index"],
        checkpoint.size,
        b64s(body["inclusion_proof"]),
        checkpoint.root,
    )

    await integrated(people.database_url)
    newer = open_checkpoint(cora.get("/v1/audit/checkpoint").text, key)
    assert newer.size > checkpoint.size
    consistency = cora.get("/v1/audit/consistency", **{"from": checkpoint.size}).json()
    assert consistency["to"] == newer.size
    verify_consistency(
        checkpoint.size, newer.size, b64s(consistency["proof"]), checkpoint.root, newer.root
    )

    # The auditors are audited: every call above is in the log, with its request id.
    own = cora.events(action="audit.*", actor="cora")
    assert [e["action"] for e in own] == [
        "audit.query",
        "audit.event",
        "audit.checkpoint",
        "audit.consistency",
    ]
    assert own[0]["subject_name"] == "carl" and own[0]["details"]["returned"] == 3
    assert {e["request_id"] for e in own} == {"req-test-1"}


async def test_failed_login_records_the_attempted_username_and_never_the_password(
    people: ServerProcess,
) -> None:
    assert login_attempt(people, "nobody-here", MARKER) == 401
    assert login_attempt(people, "carl", MARKER) == 401
    cora = Client(people, "cora")
    failed = cora.events(action="login.failed")
    assert [(e["actor_name"], e["actor_id"] is None) for e in failed] == [
        ("nobody-here", True),
        ("carl", False),
    ]
    assert [e["details"]["reason"] for e in failed] == ["unknown_user", "wrong_password"]
    tables = await snapshot(people.database_url, exclude=())
    assert MARKER not in repr(tables)
    assert MARKER not in people.log()


def test_lockout_is_recorded_once_per_window(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path, sqlite_url, login_attempts_per_account=2) as server:
        server.create_account("cora", "compliance")
        server.create_account("carl", "client")
        codes = [login_attempt(server, "carl", "wrong password") for _ in range(6)]
        assert codes == [401, 401, 429, 429, 429, 429]
        locked = Client(server, "cora").events(action="login.locked")
        assert len(locked) == 1
        assert locked[0]["subject_name"] == "carl" and locked[0]["outcome"] == "denied"
        assert locked[0]["details"] == {"limit": "account"}


async def test_other_roles_get_403_on_every_audit_endpoint_and_each_refusal_is_recorded(
    people: ServerProcess,
) -> None:
    for username, role in [("tess", "therapist"), ("sam", "supervisor"), ("ada", "admin")]:
        people.create_account(username, role)
    for username in ("carl", "tess", "sam", "ada"):
        client = Client(people, username)
        for path in [*ENDPOINTS, "/v1/audit/events?bogus=1"]:
            response = client.get(path)
            assert response.status_code == 403, (username, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    denied = Client(people, "cora").events(outcome="denied", limit=1000)
    assert len(denied) == 4 * (len(ENDPOINTS) + 1)
    assert {(e["actor_name"], e["actor_role"]) for e in denied} == {
        ("carl", "client"),
        ("tess", "therapist"),
        ("sam", "supervisor"),
        ("ada", "admin"),
    }
    assert {e["action"] for e in denied} == {
        "audit.query",
        "audit.event",
        "audit.checkpoint",
        "audit.consistency",
        "audit.export",
    }


def test_audit_endpoints_need_a_token_and_refuse_unknown_parameters(
    sqlite_server: ServerProcess,
) -> None:
    for path in ENDPOINTS:
        assert httpx.get(sqlite_server.http_url + path, timeout=10).status_code == 401
    sqlite_server.create_account("cora", "compliance")
    cora = Client(sqlite_server, "cora")
    response = cora.get("/v1/audit/events", client_id="carl")  # a typo must not widen a query
    assert response.status_code == 400 and "client_id" in response.json()["error"]["message"]
    assert cora.get("/v1/audit/events", outcome="maybe").status_code == 400
    assert cora.get("/v1/audit/events/999999").status_code == 404
    assert cora.get("/v1/audit/export", format="xml").status_code == 400


def test_cursor_pages_through_every_matching_event_once(sqlite_server: ServerProcess) -> None:
    for username in ("cora", "carl", "tess", "sam", "ada"):
        sqlite_server.create_account(username, "compliance" if username == "cora" else "client")
    cora = Client(sqlite_server, "cora")
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "action": "account.created"}
        if cursor is not None:
            params["cursor"] = cursor
        page = cora.get("/v1/audit/events", **params).json()
        seen.extend(e["index"] for e in page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 5


async def test_exports_verify_offline_with_only_the_verifier_key(
    people: ServerProcess, tmp_path: Path
) -> None:
    Client(people, "carl")
    cora = Client(people, "cora")
    await integrated(people.database_url)
    key = verifier(people)
    for fmt, params, complete in (
        ("ndjson", {}, True),
        ("csv", {}, True),
        ("ndjson", {"client": "carl"}, False),
        ("csv", {"client": "carl"}, False),
    ):
        response = cora.get("/v1/audit/export", format=fmt, **params)
        assert response.status_code == 200
        assert "attachment" in response.headers["content-disposition"]
        path = tmp_path / f"export.{fmt}"
        path.write_bytes(response.content)
        with path.open(encoding="utf-8", newline="") as file:
            report = verify_bundle(read_records(file), [key])
        assert report.complete is complete
        # A filtered export about carl also holds earlier exports about carl, once signed.
        assert report.events == report.checkpoint.size if complete else report.events >= 2
        result = people.cli("audit", "verify", "--export", str(path), "--key", key.key_string())
        assert "ok:" in result.stdout


async def test_logout_device_changes_and_account_changes_are_recorded(
    people: ServerProcess,
) -> None:
    carl = Peer(people, "carl").login()
    assert carl.register().status_code == 200
    assert carl.register(version=2, extra=[]).status_code == 200
    assert (
        httpx.post(people.http_url + "/v1/logout", headers=carl.auth, timeout=10).status_code == 204
    )
    people.cli("account", "revoke-sessions", "carl")
    people.cli("account", "disable", "carl")
    people.cli("account", "enable", "carl")
    cora = Client(people, "cora")
    actions = [e["action"] for e in cora.events(client="carl")]
    assert actions == [
        "account.created",
        "login",
        "devices.published",
        "devices.published",
        "session.logout",
        "account.sessions_revoked",
        "account.disabled",
        "account.enabled",
    ]
    published = cora.events(action="devices.published")[0]
    assert published["details"]["added"] == [str(carl.device_id)]
    assert published["details"]["identity_key"] == "first_published"
    disabled = cora.events(action="account.disabled")[0]
    assert disabled["actor_role"] == "operator" and disabled["actor_name"].startswith("cli")
    assert disabled["address"] == "cli"
