"""The accounting of disclosures: each client sees the exports that covered them (REST and SDK),
and an entry under a notice delay appears by itself once the delay is over."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from securemsg.audit.integrator import Integrator
from securemsg.client import Client, ClientOptions, Disclosure, KdfParams
from securemsg.server.legal import LegalService
from securemsg.settings import Settings
from securemsg.storage.database import Database
from tests.legal.conftest import Account, World
from tests.support.server import PASSWORD, provision

YEAR_MS = 365 * 86400 * 1000


def accounting(account: Account) -> list[dict[str, Any]]:
    return list(account.ok(account.get("/v1/disclosures"))["disclosures"])


async def test_each_account_sees_the_exports_that_covered_it_once_their_notice_is_due(
    world: World, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    _, [other] = await provision(world.server.database_url, {"olga": "client"}, [("tess", "olga")])
    carl_conversation = {"conversation": str(world.conversation)}
    due = world.exported(carl_conversation, notice_after_ms=now_ms - 1000)
    delayed = world.exported(
        {"account": str(world.tess.account_id)},
        notice_after_ms=now_ms + YEAR_MS,
        authority="Grand Jury",
        legal_basis="subpoena",
    )
    olgas = world.exported({"conversation": str(other)})
    pending = world.cora.file(carl_conversation)  # filed, never exported
    world.cole.ok(world.cole.post(f"/v1/legal/requests/{pending['id']}/approve"))

    carl = Account(world.server, "carl", world.carl.token)
    [entry] = accounting(carl)
    assert entry["id"] == due["id"]
    assert entry["date_ms"] == due["exported_ms"]
    assert entry["recipient"] == due["authority"]
    assert entry["purpose"] == due["legal_basis"]
    assert "ciphertext" in entry["description"] and due["reference"] in entry["description"]
    olga = Account(world.server, "olga")
    assert [e["id"] for e in accounting(olga)] == [olgas["id"]]
    tess = Account(world.server, "tess", world.tess.token)
    assert [e["id"] for e in accounting(tess)] == [olgas["id"], due["id"]]  # newest first
    assert accounting(world.cora) == []  # an officer is in no conversation

    # The delayed entry appears by itself, for everyone it covers, when its notice is due.
    database = Database.open(world.server.database_url)
    try:
        service = LegalService(database, Settings(), Integrator())
        notice_ms = delayed["notice_after_ms"]
        for account, before, after in (
            (world.carl.account_id, {due["id"]}, {due["id"], delayed["id"]}),
            (uuid.UUID(olga.ok(olga.get("/v1/me"))["account"]), {olgas["id"]}, None),
        ):
            assert account is not None
            early = await service.disclosures(account, now_ms=notice_ms - 1)
            assert {str(d.request_id) for d in early} == before
            on_time = await service.disclosures(account, now_ms=notice_ms)
            # Olga's conversation is tess's too, so tess's account scope covers it.
            expected = after or {olgas["id"], delayed["id"]}
            assert {str(d.request_id) for d in on_time} == expected
    finally:
        await database.close()

    # The SDK gives the client the same accounting.
    async with Client.connect(
        world.server.http_url,
        keystore=tmp_path / "olga.keys",
        passphrase="keystore passphrase",
        options=ClientOptions(kdf=KdfParams(time_cost=1, memory_kib=1024, parallelism=1)),
    ) as client:
        await client.login("olga", PASSWORD)
        found = await client.disclosures()
    assert found == [
        Disclosure(
            uuid.UUID(olgas["id"]),
            olgas["exported_ms"],
            olgas["authority"],
            found[0].description,
            olgas["legal_basis"],
        )
    ]
    assert str(other) in found[0].description
