"""Export bundles: written as NDJSON or CSV, checked offline with only the verifier key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from securemsg.audit.bundle import (
    BundleEvent,
    BundleHeader,
    csv_header,
    csv_line,
    end_record,
    ndjson_line,
    read_records,
    verify_bundle,
)
from securemsg.audit.checkpoint import Checkpoint, sign_checkpoint
from securemsg.audit.errors import CheckpointError, LogMismatch
from securemsg.audit.events import Actor, AuditEvent, SealedEvent, Subject
from securemsg.audit.merkle import MemoryTree, inclusion_proof
from securemsg.audit.note import NoteSigner
from securemsg.crypto.signing import SigningKey

ORIGIN = "audit.test/securemsg"
SIGNER = NoteSigner(ORIGIN, SigningKey.from_seed(bytes(range(32))))
OTHER = NoteSigner(ORIGIN, SigningKey.from_seed(bytes(32)))
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000c1c1")

Records = list[dict[str, Any]]


def _log(size: int) -> tuple[list[SealedEvent], MemoryTree]:
    events = []
    tree = MemoryTree()
    for i in range(size):
        name = "=cmd|' /C calc'!A0" if i == 3 else f"user{i}"  # a spreadsheet formula
        event = AuditEvent(
            "login.failed" if i % 2 else "login",
            "failure" if i % 2 else "success",
            actor=Actor(None, name),
            subject=Subject(CLIENT if i % 3 == 0 else None),
            purpose="authentication",
            details={"reason": "wrong_password"} if i % 2 else {},
        )
        sealed = SealedEvent(1_000 + i, event, bytes([i % 256]) * 16)
        events.append(sealed)
        tree.append(sealed.leaf)
    return events, tree


def bundle(
    size: int = 13, *, keep: Callable[[int], bool] = lambda i: True, signer: NoteSigner = SIGNER
) -> Records:
    events, tree = _log(size)
    note = sign_checkpoint(signer, ORIGIN, size, tree.root())
    filters: dict[str, str | int] = {} if keep(-1) else {"client": str(CLIENT)}
    records = [BundleHeader(note, size, 99, filters).record()]
    for index, sealed in enumerate(events):
        if keep(index):
            proof = inclusion_proof(tree, index, size)
            fields = sealed.event.fields(sealed.time_ms)
            records.append(BundleEvent(index, fields, sealed.salt, sealed.leaf, proof).record())
    records.append(end_record(len(records) - 1))
    return records


def as_ndjson(records: Records) -> list[str]:
    return [ndjson_line(r) for r in records]


def as_csv(records: Records) -> list[str]:
    text = csv_header() + "".join(csv_line(r) for r in records)
    return text.splitlines(keepends=True)


FORMATS = {"ndjson": as_ndjson, "csv": as_csv}


@pytest.mark.parametrize("fmt", FORMATS)
def test_complete_bundle_verifies_with_the_verifier_key(fmt: str) -> None:
    report = verify_bundle(read_records(FORMATS[fmt](bundle())), [SIGNER.verifier])
    assert (report.events, report.complete, report.checkpoint.size) == (13, True, 13)


@pytest.mark.parametrize("fmt", FORMATS)
def test_filtered_bundle_proves_each_of_its_events(fmt: str) -> None:
    records = bundle(keep=lambda i: i % 3 == 0)
    report = verify_bundle(read_records(FORMATS[fmt](records)), [SIGNER.verifier])
    assert (report.events, report.complete) == (5, False)


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_and_read_back() -> None:
    lines = as_csv(bundle())
    assert any(",'=cmd|" in line for line in lines)
    assert not any(",=cmd" in line for line in lines)
    events = [r for r in read_records(lines) if r["record"] == "event"]
    assert events[3]["event"]["actor_name"] == "=cmd|' /C calc'!A0"


def _edit_event(records: Records) -> Records:
    records[5]["event"]["outcome"] = "denied"
    return records


def _edit_leaf(records: Records) -> Records:
    records[5]["leaf"] = records[6]["leaf"]
    return records


def _swap(records: Records) -> Records:
    records[5]["index"], records[6]["index"] = records[6]["index"], records[5]["index"]
    records[5], records[6] = records[6], records[5]
    return records


def _drop(records: Records) -> Records:
    del records[5]
    records[-1]["events"] -= 1
    return records


def _truncate(records: Records) -> Records:
    return records[:9]


def _bad_proof(records: Records) -> Records:
    records[5]["proof"] = records[5]["proof"][:-1]
    return records


@pytest.mark.parametrize(
    ("tamper", "index"),
    [
        (_edit_event, 4),
        (_edit_leaf, 4),
        (_swap, 4),
        (_drop, 4),
        (_truncate, 8),
        (_bad_proof, 4),
    ],
    ids=["edited-event", "edited-leaf", "reordered", "deleted", "truncated", "bad-proof"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_bundle_is_refused_at_the_first_bad_index(
    fmt: str, tamper: Callable[[Records], Records], index: int
) -> None:
    records = tamper(json.loads(json.dumps(bundle())))
    with pytest.raises(LogMismatch) as refused:
        verify_bundle(read_records(FORMATS[fmt](records)), [SIGNER.verifier])
    assert refused.value.index == index


def test_bundle_signed_by_another_key_is_refused() -> None:
    with pytest.raises(CheckpointError):
        verify_bundle(read_records(as_ndjson(bundle(signer=OTHER))), [SIGNER.verifier])


def test_bundle_older_than_a_saved_checkpoint_is_refused() -> None:
    _, tree = _log(20)
    saved = Checkpoint(ORIGIN, 20, tree.root())
    with pytest.raises(LogMismatch, match="older than the saved one"):
        verify_bundle(read_records(as_ndjson(bundle())), [SIGNER.verifier], saved=saved)


def test_complete_bundle_extends_a_saved_checkpoint() -> None:
    _, tree = _log(13)
    saved = Checkpoint(ORIGIN, 7, tree.root(7))
    verify_bundle(read_records(as_ndjson(bundle())), [SIGNER.verifier], saved=saved)
    forged = Checkpoint(ORIGIN, 7, tree.root(6))
    with pytest.raises(LogMismatch, match="saved checkpoint"):
        verify_bundle(read_records(as_ndjson(bundle())), [SIGNER.verifier], saved=forged)
