"""The limits on supervisor grants, legal requests and the audit log, each set low on the real
server process and exercised over real sockets: refused at the limit with its documented code."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from securemsg.crypto.grants import sign_consent
from securemsg.storage.database import Database
from securemsg.storage.models import audit_checkpoints, audit_leaves
from tests.audit.tamper import integrated
from tests.legal.conftest import Account, populate
from tests.support.grants import grant_record, key_share, now_ms, post_grant, supervisor
from tests.support.peer import b64, pair
from tests.support.server import running_server


def refused_with(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- supervisor grants -------------------------------------------------------------------------


def test_grant_longer_than_max_grant_seconds_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path / "data", sqlite_url, max_grant_seconds=60) as server:
        tess, _carl, conversation = pair(server)
        sam = supervisor(server)
        start = now_ms() - 1000
        too_long = grant_record(tess, sam, conversation, from_ms=start, until_ms=start + 61_000)
        refused_with(post_grant(tess, conversation, too_long), 400, "bad_grant")
        within = grant_record(tess, sam, conversation, from_ms=start, until_ms=start + 60_000)
        assert post_grant(tess, conversation, within).status_code == 201
        listed = httpx.get(
            f"{server.http_url}/v1/conversations/{conversation}/grants", headers=tess.auth
        ).json()["grants"]
        assert [g["until_ms"] - g["from_ms"] for g in listed] == [60_000]


def test_grant_without_the_clients_consent_is_refused_when_consent_is_required(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(
        tmp_path / "data", sqlite_url, grants_require_client_consent=True
    ) as server:
        tess, carl, conversation = pair(server)
        sam = supervisor(server)
        record = grant_record(tess, sam, conversation)
        refused_with(post_grant(tess, conversation, record), 400, "bad_grant")
        assert carl.account_id is not None
        consent = sign_consent(
            carl.device,
            grant_raw=record,
            client_account=carl.account_id.bytes,
            client_device=carl.device_id.bytes,
        )
        granted = httpx.post(
            f"{server.http_url}/v1/conversations/{conversation}/grants",
            headers=tess.auth,
            json={"grant": b64(record), "consent": b64(consent)},
        )
        assert granted.status_code == 201, granted.text
        assert granted.json()["consent"] == b64(consent)


async def test_key_share_upload_over_max_key_shares_per_request_is_refused(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, max_key_shares_per_request=1) as server:
        tess, carl, conversation = pair(server)
        sam = supervisor(server)
        await carl.connect()
        to_tess = {tess.device_id: tess.device.encryption_key}
        for text in ("first", "second"):
            sent = await carl.send(carl.seal(conversation, to_tess, text))
            assert sent["type"] == "accepted", sent
        await carl.close()
        created = post_grant(tess, conversation, grant_record(tess, sam, conversation))
        grant_id = uuid.UUID(created.json()["id"])
        history = httpx.get(
            f"{server.http_url}/v1/conversations/{conversation}/history", headers=tess.auth
        ).json()["items"]
        shares = [
            key_share(tess, sam, grant_id, item) for item in history if item["kind"] == "message"
        ]
        assert len(shares) == 2

        def upload(batch: list[str]) -> httpx.Response:
            url = f"{server.http_url}/v1/grants/{grant_id}/key-shares"
            return httpx.post(url, headers=tess.auth, json={"shares": batch})

        refused_with(upload(shares), 400, "bad_grant")
        stored = httpx.get(
            f"{server.http_url}/v1/grants/{grant_id}/key-shares",
            headers=sam.auth,
            params={"device": str(sam.device_id)},
        ).json()["shares"]
        assert stored == []  # nothing of the refused request was kept
        for share in shares:  # one request per share is within the limit
            response = upload([share])
            assert response.status_code == 200 and response.json() == {"stored": 1}


# -- legal requests and holds ------------------------------------------------------------------


async def test_legal_names_and_texts_over_their_limits_are_refused(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(
        tmp_path / "data", sqlite_url, legal_max_name_chars=10, legal_max_text_chars=20
    ) as server:
        world = await populate(server)
        cora, cole = world.cora, world.cole
        scope = {"conversation": str(world.conversation)}
        at_limit = {"authority": "A" * 10, "reference": "R" * 10, "legal_basis": "B" * 20}
        for field, over in (("authority", 11), ("reference", 11), ("legal_basis", 21)):
            body = at_limit | {field: "x" * over, "scope": scope}
            refused_with(cora.post("/v1/legal/requests", body), 400, "bad_request")
        assert cora.ok(cora.get("/v1/legal/requests"))["requests"] == []
        filed = cora.ok(cora.post("/v1/legal/requests", at_limit | {"scope": scope}), 201)

        approve = f"/v1/legal/requests/{filed['id']}/approve"
        refused_with(cole.post(approve, {"note": "n" * 21}), 400, "bad_request")
        assert cole.ok(cole.post(approve, {"note": "n" * 20}))["decision_note"] == "n" * 20

        hold = {"account": str(world.carl.account_id)}
        refused_with(cora.post("/v1/legal/holds", hold | {"reason": "r" * 21}), 400, "bad_request")
        assert cora.ok(cora.post("/v1/legal/holds", hold | {"reason": "r" * 20}), 201)["active"]


async def test_legal_lists_return_at_most_legal_max_page_items_and_page_on(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, legal_max_page_items=1) as server:
        world = await populate(server)
        cora = world.cora
        filed = [cora.file({"conversation": str(world.conversation)}) for _ in range(2)]
        hold = {"conversation": str(world.conversation)}
        held = [
            cora.ok(cora.post("/v1/legal/holds", hold | {"reason": reason}), 201)
            for reason in ("case 1", "case 2")
        ]
        for path, key, made in (
            ("/v1/legal/requests", "requests", filed),
            ("/v1/legal/holds", "holds", held),
        ):
            first = cora.ok(cora.get(path, limit=100))
            assert [item["id"] for item in first[key]] == [made[1]["id"]]  # newest first
            assert first["next_cursor"] is not None
            rest = cora.ok(cora.get(path, limit=100, cursor=first["next_cursor"]))
            assert [item["id"] for item in rest[key]] == [made[0]["id"]]
            assert rest["next_cursor"] is None


async def test_export_over_legal_max_export_bytes_is_refused_and_a_narrower_scope_fits(
    tmp_path: Path, sqlite_url: str
) -> None:
    # An empty bundle is about 5 KB (request, signed checkpoint, proofs); a 20 KB message is not.
    with running_server(tmp_path / "data", sqlite_url, legal_max_export_bytes=16_000) as server:
        world = await populate(server)
        before_ms = int(time.time() * 1000) - 1000
        await world.send("x" * 20_000)
        filed = world.cora.file({"conversation": str(world.conversation)})
        path = f"/v1/legal/requests/{filed['id']}"
        world.cole.ok(world.cole.post(f"{path}/approve"))
        refused_with(world.cora.post(f"{path}/export"), 413, "export_too_large")
        assert world.cora.ok(world.cora.get(path))["status"] == "approved"
        before_the_message = {"conversation": str(world.conversation), "until_ms": before_ms}
        narrow = world.exported(before_the_message)
        bundle = world.cora.get(f"/v1/legal/requests/{narrow['id']}/bundle")
        assert bundle.status_code == 200 and len(bundle.content) <= 16_000


async def test_accounting_of_disclosures_holds_at_most_max_disclosures_newest_first(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, max_disclosures=1) as server:
        world = await populate(server)
        exports = [world.exported({"conversation": str(world.conversation)}) for _ in range(2)]
        carl = Account(server, "carl", world.carl.token)
        accounting = carl.ok(carl.get("/v1/disclosures"))["disclosures"]
        assert [entry["id"] for entry in accounting] == [exports[1]["id"]]


# -- the audit log -----------------------------------------------------------------------------


async def test_audit_queries_return_at_most_audit_max_page_events(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(tmp_path / "data", sqlite_url, audit_max_page_events=2) as server:
        world = await populate(server)  # many events: four accounts created, four logins
        page = world.cora.ok(world.cora.get("/v1/audit/events", limit=1000))
        assert len(page["events"]) == 2 and page["next_cursor"] is not None
        rest = world.cora.ok(world.cora.get("/v1/audit/events", cursor=page["next_cursor"]))
        assert len(rest["events"]) == 2
        assert rest["events"][0]["index"] > page["events"][-1]["index"]


async def test_checkpoints_are_signed_under_the_audit_origin(
    tmp_path: Path, sqlite_url: str
) -> None:
    origin = "audit.example/limits-test"
    with running_server(tmp_path / "data", sqlite_url, audit_origin=origin) as server:
        world = await populate(server)
        await integrated(server.database_url)
        note = world.cora.get("/v1/audit/checkpoint")
        assert note.status_code == 200, note.text
        assert note.text.splitlines()[0] == origin
        key = httpx.get(server.http_url + "/v1/audit/key").text
        assert key.startswith(origin + "+")  # the key the server made is named after it too
        assert world.verifier().name == origin


async def test_audit_integration_waits_its_interval_and_steps_at_most_max_leaves(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_server(
        tmp_path / "data",
        sqlite_url,
        audit_integrate_interval_seconds=3600,
        audit_integrate_max_leaves=2,
    ) as server:
        await populate(server)  # a dozen audit events
        leaves, sizes = await _tree(sqlite_url)
        await asyncio.sleep(2.0)  # two of the default 1 s intervals
        assert await _tree(sqlite_url) == (leaves, sizes)  # nothing integrated in between
        signed = max(sizes, default=0)
        assert leaves - signed >= 4
        server.stop()  # integrates what is left before it exits, one step at a time
        final_leaves, final_sizes = await _tree(sqlite_url)
    new = [size for size in final_sizes if size > signed]
    assert new[-1] == final_leaves
    steps = [b - a for a, b in zip([signed, *new], new, strict=False)]
    assert max(steps) <= 2 and len(steps) >= 2, steps


async def _tree(database_url: str) -> tuple[int, list[int]]:
    """The audit log's leaf count and the sizes of its checkpoints."""
    database = Database.open(database_url)
    try:
        async with database.read() as conn:
            leaves = (await conn.execute(select(func.count()).select_from(audit_leaves))).one()
            sizes = await conn.execute(
                select(audit_checkpoints.c.size).order_by(audit_checkpoints.c.size)
            )
            return int(leaves[0]), [int(row[0]) for row in sizes]
    finally:
        await database.close()
