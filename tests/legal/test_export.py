"""Legal exports through the real server: ciphertext only, verifiable offline with nothing but the
published key, every download on record, fail-closed when the audit log refuses."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from securemsg.audit.errors import AuditError, CheckpointError, LogMismatch
from securemsg.audit.legal_bundle import verify_legal_bundle
from securemsg.audit.note import NoteSigner, NoteVerifier, sign_note
from securemsg.storage.models import legal_requests
from tests.audit.tamper import dialect_of, execute, fail_audit_inserts_sql, integrated
from tests.legal.conftest import MARKER, World, populate
from tests.support.db import snapshot
from tests.support.server import provision, running_server


def bundle_of(world: World, request_id: str) -> bytes:
    response = world.cora.get(f"/v1/legal/requests/{request_id}/bundle")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.content).hexdigest()
    return response.content


async def request_rows(database_url: str) -> list[dict[str, Any]]:
    names = [column.name for column in legal_requests.c]
    rows = (await snapshot(database_url))["legal_requests"]
    return [dict(zip(names, row, strict=True)) for row in rows]


def reencode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def test_export_holds_only_ciphertext_and_verifies_offline(
    world: World, tmp_path: Path
) -> None:
    await world.send(f"first {MARKER}", f"second {MARKER}")
    exported = world.exported()
    assert exported["status"] == "exported" and exported["exported_ms"] is not None
    data = bundle_of(world, exported["id"])
    assert hashlib.sha256(data).hexdigest() == exported["bundle_sha256"]

    # No plaintext anywhere: not in the file, not in any envelope it carries.
    assert MARKER.encode() not in data
    body = json.loads(data)["bundle"]
    envelopes = body["envelopes"]
    assert [e["kind"] for e in envelopes] == ["message", "message"]
    assert all(MARKER.encode() not in base64.b64decode(e["data"]) for e in envelopes)
    assert {e["conversation"] for e in envelopes} == {str(world.conversation)}
    assert {e["sender_device"] for e in envelopes} == {str(world.tess.device_id)}
    # They are the real envelopes: only the recipient's device key opens them.
    assert [world.carl.open(e["data"], world.tess) for e in envelopes] == [
        f"first {MARKER}",
        f"second {MARKER}",
    ]
    request = body["request"]
    assert request["approved_by"] != request["filed_by"]

    # Offline, with the published key and nothing else.
    key = world.verifier()
    report = verify_legal_bundle(data, [key])
    assert (report.envelopes, report.audit.events) == (2, 3)
    path = tmp_path / "export.json"
    path.write_bytes(data)
    checked = world.server.cli("audit", "verify", "--export", str(path), "--key", key.key_string())
    assert checked.returncode == 0 and "ok: legal export" in checked.stdout

    # Any change is caught.
    document = json.loads(data)
    document["bundle"]["envelopes"].pop()
    path.write_bytes(reencode(document))
    refused = world.server.cli(
        "audit", "verify", "--export", str(path), "--key", key.key_string(), check=False
    )
    assert refused.returncode == 1 and "FAILED" in refused.stderr


def tampered(data: bytes, key: NoteVerifier) -> list[tuple[str, bytes, type[AuditError]]]:
    """Variants of a bundle and the error each must raise."""
    document = json.loads(data)
    variants = []

    def variant(name: str, change: Any, error: type[AuditError] = LogMismatch) -> None:
        copy = json.loads(json.dumps(document))
        change(copy)
        variants.append((name, reencode(copy), error))

    def flip_ciphertext(d: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(d["bundle"]["envelopes"][0]["data"]))
        raw[-1] ^= 1
        d["bundle"]["envelopes"][0]["data"] = base64.b64encode(raw).decode()

    variant("ciphertext", flip_ciphertext)
    variant("authority", lambda d: d["bundle"]["request"].update(authority="someone else"))
    variant("time", lambda d: d["bundle"].update(exported_ms=d["bundle"]["exported_ms"] + 1))
    variant("event", lambda d: d["bundle"]["audit"][1]["event"].update(actor_name="mallory"))

    def flip_signature(d: dict[str, Any]) -> None:
        # A bit of the signature itself: editing its base64 text could land on the padding
        # bits of the last character, which decode to the same bytes.
        lines = d["signature"].split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith("\u2014 "))
        prefix, encoded = lines[at].rsplit(" ", 1)
        raw = bytearray(base64.b64decode(encoded))
        raw[-1] ^= 1
        lines[at] = f"{prefix} {base64.b64encode(bytes(raw)).decode()}"
        d["signature"] = "\n".join(lines)

    variant("signature", flip_signature, CheckpointError)

    # Re-signed by a key the verifier does not trust: the attacker's own bundle.
    forger = NoteSigner.generate(key.name)

    def resign(d: dict[str, Any]) -> None:
        d["bundle"]["envelopes"].pop()
        canonical = json.dumps(
            d["bundle"], ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()
        digest = base64.b64encode(hashlib.sha256(canonical).digest()).decode()
        text = f"securemsg/v1/legal-export\n{d['bundle']['request']['id']}\n{digest}\n"
        d["signature"] = sign_note(text, forger)

    variant("forged", resign, CheckpointError)
    return variants


async def test_a_changed_bundle_fails_verification(sqlite_world: World) -> None:
    world = sqlite_world
    await world.send("one", "two")
    data = bundle_of(world, world.exported()["id"])
    key = world.verifier()
    for name, variant, error in tampered(data, key):
        try:
            verify_legal_bundle(variant, [key])
        except error:
            continue
        except AuditError as exc:
            pytest.fail(f"{name}: {exc!r}")
        pytest.fail(f"{name}: verified")
    with pytest.raises(CheckpointError):
        verify_legal_bundle(data, [NoteSigner.generate("other/log").verifier])


async def test_every_download_is_recorded_and_closing_deletes_the_bundle(
    sqlite_world: World,
) -> None:
    world = sqlite_world
    await world.send("hello")
    exported = world.exported()
    first = bundle_of(world, exported["id"])
    second = world.cole.get(f"/v1/legal/requests/{exported['id']}/bundle")
    assert second.content == first
    downloads = world.cora.events(action="legal.downloaded")
    assert [(e["actor_name"], e["outcome"]) for e in downloads] == [
        ("cora", "success"),
        ("cole", "success"),
    ]
    assert {e["details"]["bundle_sha256"] for e in downloads} == {exported["bundle_sha256"]}
    assert {e["subject_name"] for e in downloads} == {"carl"}

    closed = world.cole.ok(world.cole.post(f"/v1/legal/requests/{exported['id']}/close"))
    assert closed["status"] == "closed" and closed["bundle_sha256"] == exported["bundle_sha256"]
    gone = world.cora.get(f"/v1/legal/requests/{exported['id']}/bundle")
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "wrong_state"
    [row] = await request_rows(world.server.database_url)
    assert row["bundle"] is None and row["bundle_sha256"] == hashlib.sha256(first).digest()


async def test_when_the_audit_log_refuses_an_export_nothing_is_returned_or_changed(
    world: World,
) -> None:
    await world.send(f"secret {MARKER}")
    filed = world.cora.file({"conversation": str(world.conversation)})
    path = f"/v1/legal/requests/{filed['id']}"
    world.cole.ok(world.cole.post(f"{path}/approve"))
    url = world.server.database_url
    await integrated(url)
    await execute(url, *fail_audit_inserts_sql(dialect_of(url)))
    before = await snapshot(url)
    [row] = await request_rows(url)
    for caller in (world.cora, world.cole):
        response = caller.post(f"{path}/export")
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert MARKER not in response.text and "envelopes" not in response.text
        assert caller.get(f"{path}/bundle").status_code == 503
    assert await snapshot(url) == before
    assert row["status"] == "approved" and row["bundle"] is None


async def test_a_scope_too_large_for_one_bundle_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    with running_server(tmp_path / "data", sqlite_url, legal_max_export_envelopes=1) as server:
        world = await populate(server)
        await world.send("one", "two")
        filed = world.cora.file({"conversation": str(world.conversation)})
        path = f"/v1/legal/requests/{filed['id']}"
        world.cole.ok(world.cole.post(f"{path}/approve"))
        refused = world.cora.post(f"{path}/export")
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "export_too_large"
        assert world.cora.ok(world.cora.get(path))["status"] == "approved"
        # A narrower time range fits.
        first_ms = int(time.time() * 1000) - 60_000
        scope = {"conversation": str(world.conversation), "from_ms": first_ms}
        narrow = world.cora.file(scope | {"until_ms": first_ms + 1})
        world.cole.ok(world.cole.post(f"/v1/legal/requests/{narrow['id']}/approve"))
        world.cora.ok(world.cora.post(f"/v1/legal/requests/{narrow['id']}/export"))
        [failed] = world.cora.events(action="legal.exported", outcome="failure")
        assert failed["details"] == {"error": "export_too_large"}


async def test_an_account_scope_covers_each_of_its_conversations_within_the_time_range(
    sqlite_world: World,
) -> None:
    world = sqlite_world
    await world.send("before the range")
    since_ms = int(time.time() * 1000) + 1
    time.sleep(0.01)
    await world.send(f"inside {MARKER}")
    _, [other] = await provision(world.server.database_url, {"olga": "client"}, [("tess", "olga")])
    exported = world.exported({"account": str(world.tess.account_id), "from_ms": since_ms})
    data = bundle_of(world, exported["id"])
    envelopes = json.loads(data)["bundle"]["envelopes"]
    assert [world.carl.open(e["data"], world.tess) for e in envelopes] == [f"inside {MARKER}"]
    assert all(e["received_ms"] >= since_ms for e in envelopes)
    verify_legal_bundle(data, [world.verifier()])
    assert other != world.conversation
