"""Legal requests through the real server: dual control, the state machine, who may call, and
that every step and every refusal is in the audit log."""

from __future__ import annotations

import uuid

from tests.legal.conftest import Account, World
from tests.support.db import snapshot
from tests.support.server import provision

# Refusals change none of these (the audit log records them; sessions record activity).
UNRECORDED = ("audit_leaves", "audit_events", "audit_nodes", "audit_checkpoints", "sessions")
ROUTES = [
    ("POST", "/v1/legal/requests"),
    ("GET", "/v1/legal/requests"),
    ("GET", "/v1/legal/requests/{id}"),
    ("POST", "/v1/legal/requests/{id}/approve"),
    ("POST", "/v1/legal/requests/{id}/deny"),
    ("POST", "/v1/legal/requests/{id}/export"),
    ("GET", "/v1/legal/requests/{id}/bundle"),
    ("POST", "/v1/legal/requests/{id}/close"),
    ("POST", "/v1/legal/holds"),
    ("GET", "/v1/legal/holds"),
    ("POST", "/v1/legal/holds/{id}/release"),
]


async def test_the_filer_cannot_approve_or_deny_their_own_request(world: World) -> None:
    filed = world.cora.file({"conversation": str(world.conversation)})
    assert filed["status"] == "filed" and filed["decided_by"] is None
    path = f"/v1/legal/requests/{filed['id']}"
    before = await snapshot(world.server.database_url, exclude=UNRECORDED)
    for step in ("approve", "deny"):
        refused = world.cora.post(f"{path}/{step}", {"note": "looks fine to me"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert "dual control" in refused.json()["error"]["message"]
    assert await snapshot(world.server.database_url, exclude=UNRECORDED) == before
    assert world.cora.ok(world.cora.get(path))["status"] == "filed"

    approved = world.cole.ok(world.cole.post(f"{path}/approve", {"note": "second officer"}))
    assert approved["status"] == "approved"
    assert approved["decided_by"] != approved["filed_by"]
    assert approved["decision_note"] == "second officer"

    steps = world.cole.events(action="legal.*")
    mine = [e for e in steps if e["resource"] == f"legal-request:{filed['id']}"]
    assert [(e["action"], e["outcome"], e["actor_name"]) for e in mine] == [
        ("legal.filed", "success", "cora"),
        ("legal.approved", "denied", "cora"),
        ("legal.denied", "denied", "cora"),
        ("legal.read", "success", "cora"),
        ("legal.approved", "success", "cole"),
    ]
    assert mine[1]["details"] == {"error": "forbidden", "reason": "dual_control"}
    assert mine[0]["subject_name"] == "carl"
    assert mine[0]["details"]["scope_conversation"] == str(world.conversation)


async def test_only_an_approved_request_exports_and_each_step_follows_the_table(
    world: World,
) -> None:
    filed = world.cora.file({"account": str(world.carl.account_id)})
    path = f"/v1/legal/requests/{filed['id']}"
    for step in ("export", "close"):
        if step == "close":
            break
        refused = world.cora.post(f"{path}/{step}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "wrong_state"
    assert world.cora.get(f"{path}/bundle").json()["error"]["code"] == "wrong_state"

    denied = world.cole.ok(world.cole.post(f"{path}/deny", {"note": "no warrant attached"}))
    assert denied["status"] == "denied"
    for step in ("export", "approve", "deny"):
        refused = world.cole.post(f"{path}/{step}")
        assert refused.status_code == 409, (step, refused.text)
    closed = world.cora.ok(world.cora.post(f"{path}/close"))
    assert closed["status"] == "closed" and closed["closed_ms"] is not None
    assert world.cora.post(f"{path}/close").status_code == 409
    assert world.cora.post(f"{path}/export").status_code == 409

    row = (await snapshot(world.server.database_url))["legal_requests"][0]
    assert row[-3] is None and row[-2] is None  # never a bundle, nor its hash
    exported_attempts = world.cora.events(action="legal.exported")
    assert [e["outcome"] for e in exported_attempts] == ["failure", "failure", "failure"]
    assert {e["details"]["error"] for e in exported_attempts} == {"wrong_state"}


async def test_other_roles_get_403_on_every_legal_route_and_each_refusal_is_recorded(
    world: World,
) -> None:
    server = world.server
    await provision(server.database_url, {"sam": "supervisor", "adam": "admin"})
    filed = world.cora.file({"conversation": str(world.conversation)})
    callers = [
        Account(server, "tess", world.tess.token),
        Account(server, "carl", world.carl.token),
        Account(server, "sam"),
        Account(server, "adam"),
    ]
    before = await snapshot(server.database_url, exclude=UNRECORDED)
    for caller in callers:
        for method, route in ROUTES:
            path = route.format(id=filed["id"])
            response = caller.get(path) if method == "GET" else caller.post(path, {"bogus": 1})
            assert response.status_code == 403, (caller.username, method, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    assert await snapshot(server.database_url, exclude=UNRECORDED) == before
    denied = world.cora.events(outcome="denied", action="legal.*")
    assert len(denied) == len(callers) * len(ROUTES)
    assert {e["actor_name"] for e in denied} == {"tess", "carl", "sam", "adam"}
    assert {e["actor_role"] for e in denied} == {"therapist", "client", "supervisor", "admin"}
    assert all(e["details"] == {"error": "forbidden"} for e in denied)


async def test_malformed_requests_are_refused_with_stable_codes(sqlite_world: World) -> None:
    world = sqlite_world
    cora = world.cora
    conversation = str(world.conversation)
    cases = [
        ({"conversation": conversation, "extra": 1}, {}, 400, "bad_request"),
        ({}, {}, 400, "bad_request"),
        ({"conversation": conversation, "from_ms": 5, "until_ms": 5}, {}, 400, "bad_request"),
        ({"conversation": conversation, "from_ms": -1}, {}, 400, "bad_request"),
        ({"conversation": conversation}, {"authority": ""}, 400, "bad_request"),
        ({"conversation": conversation}, {"authority": "a" * 201}, 400, "bad_request"),
        ({"conversation": conversation}, {"legal_basis": "line\nbreak"}, 400, "bad_request"),
        ({"conversation": conversation}, {"unknown": "x"}, 400, "bad_request"),
        ({"conversation": str(uuid.uuid4())}, {}, 404, "not_found"),
        ({"account": str(uuid.uuid4())}, {}, 404, "not_found"),
        ({"account": "not-a-uuid"}, {}, 400, "bad_request"),
    ]
    ids, _ = await provision(world.server.database_url, {"olga": "client"})  # no conversation
    outsider = str(ids["olga"])
    cases.append(({"conversation": conversation, "account": outsider}, {}, 400, "bad_request"))
    for scope, fields, status, code in cases:
        body = {
            "authority": "court",
            "reference": "ref",
            "legal_basis": "order",
            "scope": scope,
            **fields,
        }
        response = cora.post("/v1/legal/requests", body)
        assert response.status_code == status, (scope, fields, response.text)
        assert response.json()["error"]["code"] == code
    assert cora.get(f"/v1/legal/requests/{uuid.uuid4()}").status_code == 404
    assert cora.get("/v1/legal/requests/nope").status_code == 404
    assert cora.get("/v1/legal/requests", status="lost").status_code == 400
    assert cora.get("/v1/legal/requests", colour="red").status_code == 400
    # Every refusal that reached the service is on record, with its error code.
    failures = cora.events(action="legal.filed", outcome="failure")
    assert len(failures) == 8  # the rest were refused by the HTTP layer, before the service
    assert all(set(e["details"]) == {"error"} for e in failures)


async def test_listing_pages_newest_first_and_filters_by_status(sqlite_world: World) -> None:
    world = sqlite_world
    ids = [world.cora.file({"conversation": str(world.conversation)})["id"] for _ in range(5)]
    world.cole.ok(world.cole.post(f"/v1/legal/requests/{ids[1]}/approve"))
    first = world.cole.ok(world.cole.get("/v1/legal/requests", limit=2))
    assert [r["id"] for r in first["requests"]] == ids[::-1][:2]
    second = world.cole.ok(
        world.cole.get("/v1/legal/requests", limit=2, cursor=first["next_cursor"])
    )
    third = world.cole.ok(
        world.cole.get("/v1/legal/requests", limit=2, cursor=second["next_cursor"])
    )
    assert [r["id"] for r in second["requests"] + third["requests"]] == ids[::-1][2:]
    assert third["next_cursor"] is None
    approved = world.cole.ok(world.cole.get("/v1/legal/requests", status="approved"))
    assert [r["id"] for r in approved["requests"]] == [ids[1]]
