"""Legal holds through the real server, and `securemsg account delete` refused under hold."""

from __future__ import annotations

import uuid

import httpx

from tests.legal.conftest import World
from tests.support.db import snapshot
from tests.support.server import PASSWORD

UNRECORDED = ("audit_leaves", "audit_events", "audit_nodes", "audit_checkpoints")


async def test_holds_are_placed_listed_released_and_every_step_recorded(
    sqlite_world: World,
) -> None:
    world = sqlite_world
    cora, cole = world.cora, world.cole
    on_conversation = cora.ok(
        cora.post("/v1/legal/holds", {"conversation": str(world.conversation), "reason": "case 7"}),
        201,
    )
    on_account = cole.ok(
        cole.post("/v1/legal/holds", {"account": str(world.carl.account_id), "reason": "case 8"}),
        201,
    )
    assert on_conversation["active"] and on_conversation["account"] is None
    assert on_account["conversation"] is None and on_account["placed_by"] != on_account["id"]
    both = {"account": str(world.carl.account_id), "conversation": str(world.conversation)}
    for body, status in (
        ({"reason": "no scope"}, 400),
        (both | {"reason": "two scopes"}, 400),
        ({"account": str(world.carl.account_id)}, 400),
        ({"account": str(world.carl.account_id), "reason": " "}, 400),
        ({"account": str(uuid.uuid4()), "reason": "who?"}, 404),
        ({"conversation": str(world.conversation), "reason": "x", "until": 1}, 400),
    ):
        assert cora.post("/v1/legal/holds", body).status_code == status, body

    active = cora.ok(cora.get("/v1/legal/holds"))["holds"]
    assert [h["id"] for h in active] == [on_account["id"], on_conversation["id"]]
    released = cora.ok(cora.post(f"/v1/legal/holds/{on_account['id']}/release"))
    assert not released["active"] and released["released_ms"] is not None
    again = cora.post(f"/v1/legal/holds/{on_account['id']}/release")
    assert again.status_code == 409 and again.json()["error"]["code"] == "wrong_state"
    assert cora.post(f"/v1/legal/holds/{uuid.uuid4()}/release").status_code == 404
    assert [h["id"] for h in cora.ok(cora.get("/v1/legal/holds"))["holds"]] == [
        on_conversation["id"]
    ]
    everything = cora.ok(cora.get("/v1/legal/holds", active="false", limit=1))
    assert [h["id"] for h in everything["holds"]] == [on_account["id"]]
    rest = cora.ok(cora.get("/v1/legal/holds", active="false", cursor=everything["next_cursor"]))
    assert [h["id"] for h in rest["holds"]] == [on_conversation["id"]]

    placed = cora.events(action="legal.hold_placed")
    assert [(e["outcome"], e["actor_name"]) for e in placed[:2]] == [
        ("success", "cora"),
        ("success", "cole"),
    ]
    assert placed[0]["subject_name"] == "carl" and placed[0]["details"] == {"reason": "case 7"}
    assert placed[0]["resource"] == f"legal-hold:{on_conversation['id']}"
    # Four reached the service; a missing reason and an unknown field are refused before it.
    assert [e["outcome"] for e in placed[2:]] == ["failure"] * 4
    releases = cora.events(action="legal.hold_released")
    assert [e["outcome"] for e in releases] == ["success", "failure", "failure"]


def delete(world: World, username: str) -> tuple[int, str]:
    result = world.server.cli("account", "delete", username, check=False)
    return result.returncode, result.stdout + result.stderr


async def test_an_account_under_hold_cannot_be_deleted_until_the_hold_is_released(
    world: World,
) -> None:
    url = world.server.database_url
    hold = world.cora.ok(
        world.cora.post(
            "/v1/legal/holds", {"conversation": str(world.conversation), "reason": "litigation"}
        ),
        201,
    )
    before = await snapshot(url, exclude=UNRECORDED)
    for member in ("carl", "tess"):  # both members of the held conversation
        code, output = delete(world, member)
        assert code == 2, output
        assert f"account {member!r} is under legal hold" in output
        assert hold["id"] in output and "released" in output
    assert await snapshot(url, exclude=UNRECORDED) == before
    refusals = world.cora.events(action="account.deleted")
    assert [(e["subject_name"], e["outcome"]) for e in refusals] == [
        ("carl", "denied"),
        ("tess", "denied"),
    ]
    assert refusals[0]["details"] == {"holds": [hold["id"]]}

    world.cole.ok(world.cole.post(f"/v1/legal/holds/{hold['id']}/release"))
    code, output = delete(world, "carl")
    assert code == 0, output
    assert "1 device(s)" in output and "account row deleted" in output
    after = await snapshot(url, exclude=UNRECORDED)
    assert str(world.carl.account_id) not in repr(after["accounts"]).replace("-", "")
    assert len(after["accounts"]) == len(before["accounts"]) - 1
    assert len(after["conversation_members"]) == 1 and len(after["devices"]) == 1
    assert all(row[1] != world.carl.account_id for row in after["sessions"])
    login = httpx.post(
        world.server.http_url + "/v1/login",
        json={"username": "carl", "password": PASSWORD},
        timeout=10,
    )
    assert login.status_code == 401
    assert httpx.get(world.server.http_url + "/v1/me", headers=world.carl.auth).status_code == 401
    [deleted] = world.cora.events(action="account.deleted", outcome="success")
    assert deleted["subject_name"] == "carl" and deleted["details"]["row"] == "deleted"

    # An account that legal records still name is scrubbed and disabled instead.
    code, output = delete(world, "cora")
    assert code == 0 and "disabled and scrubbed" in output, output
    names = [row[1] for row in (await snapshot(url, exclude=UNRECORDED))["accounts"]]
    assert "cora" not in names and any(n.startswith("deleted-") for n in names)
    code, output = delete(world, "nobody")
    assert code == 2 and "no account named 'nobody'" in output
