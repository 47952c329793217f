"""Export bundles: audit events with a signed checkpoint and an inclusion proof for each event.

One bundle is one file, NDJSON or CSV, holding the same records: first a `checkpoint` record (the
signed note and what was exported), then one `event` record per event, in index order, each with
its salt, leaf and inclusion proof against that checkpoint. `verify_bundle` checks a bundle
offline with nothing but the log's verifier key; docs/audit.md specifies the format.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from securemsg.audit.checkpoint import Checkpoint, open_checkpoint
from securemsg.audit.errors import CheckpointError, LogMismatch, ProofError
from securemsg.audit.events import canonical_json, check_leaf, expected_leaf
from securemsg.audit.merkle import CompactRange, leaf_hash, verify_inclusion
from securemsg.audit.note import NoteVerifier, decode_base64, encode_base64

FORMAT = "securemsg-audit-export/1"
EVENT_COLUMNS = (
    "v",
    "time_ms",
    "action",
    "outcome",
    "actor_id",
    "actor_name",
    "actor_role",
    "subject_id",
    "subject_name",
    "resource",
    "purpose",
    "address",
    "request_id",
    "details",
)
CSV_COLUMNS = (
    "record",
    "index",
    "time_utc",
    *EVENT_COLUMNS,
    "salt",
    "leaf",
    "proof",
    "format",
    "note",
    "size",
    "exported_ms",
    "filters",
    "complete",
    "events",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")

Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class BundleHeader:
    """The `checkpoint` record: the signed note, and which events the bundle holds."""

    note: str
    size: int
    exported_ms: int
    filters: Mapping[str, str | int]

    @property
    def complete(self) -> bool:
        """No filter: the bundle holds every event below `size`, so the root can be recomputed."""
        return not self.filters

    def record(self) -> dict[str, Any]:
        return {
            "record": "checkpoint",
            "format": FORMAT,
            "note": self.note,
            "size": self.size,
            "exported_ms": self.exported_ms,
            "filters": dict(self.filters),
            "complete": self.complete,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class BundleEvent:
    index: int
    event: Mapping[str, Any]
    salt: bytes
    leaf: bytes
    proof: Sequence[bytes]

    def record(self) -> dict[str, Any]:
        return {
            "record": "event",
            "index": self.index,
            "event": dict(self.event),
            "salt": encode_base64(self.salt),
            "leaf": encode_base64(self.leaf),
            "proof": [encode_base64(h) for h in self.proof],
        }


def end_record(events: int) -> dict[str, Any]:
    """The last record: how many events came before it, so a cut-off bundle is noticed."""
    return {"record": "end", "events": events}


@dataclasses.dataclass(frozen=True, slots=True)
class BundleReport:
    checkpoint: Checkpoint
    events: int
    complete: bool


# -- writing -------------------------------------------------------------------------------


def ndjson_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_header() -> str:
    return _csv_line(CSV_COLUMNS)


def csv_line(record: Mapping[str, Any]) -> str:
    """One CSV row of a `checkpoint` or `event` record; unused columns are empty."""
    cells: dict[str, Any] = {"record": record["record"]}
    if record["record"] == "checkpoint":
        cells.update({k: record[k] for k in ("format", "note", "size", "exported_ms")})
        cells["filters"] = json.dumps(record["filters"], sort_keys=True, separators=(",", ":"))
        cells["complete"] = "true" if record["complete"] else "false"
    elif record["record"] == "end":
        cells["events"] = record["events"]
    else:
        event = record["event"]
        cells.update({k: event[k] for k in EVENT_COLUMNS})
        cells["details"] = canonical_json(event["details"]).decode("utf-8")
        cells["time_utc"] = _utc(event["time_ms"])
        cells.update(index=record["index"], salt=record["salt"], leaf=record["leaf"])
        cells["proof"] = " ".join(record["proof"])
    return _csv_line([_csv_cell(cells.get(column)) for column in CSV_COLUMNS])


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def _csv_cell(value: object) -> str:
    """Empty for None; text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_value(text: str) -> str | None:
    if text == "":
        return None
    return text[1:] if text.startswith("'") else text


# -- reading -------------------------------------------------------------------------------


def read_records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of an NDJSON or CSV bundle (told apart by the first character)."""
    iterator = iter(lines)
    first = next(iterator, "")
    if first.startswith("{"):
        yield from _ndjson_records(first, iterator)
    else:
        yield from _csv_records(first, iterator)


def _ndjson_records(first: str, rest: Iterator[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate([first], start=1):
        yield _json_record(number, line)
    for number, line in enumerate(rest, start=2):
        if line.strip():
            yield _json_record(number, line)


def _json_record(number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        raise LogMismatch(f"bundle line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise LogMismatch(f"bundle line {number} is not a JSON object")
    return value


def _csv_records(first: str, rest: Iterator[str]) -> Iterator[dict[str, Any]]:
    def chained() -> Iterator[str]:
        yield first
        yield from rest

    reader = csv.DictReader(chained())
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise LogMismatch("bundle is neither NDJSON nor a CSV with the export columns")
    for row in reader:
        cells = {k: _csv_value(v or "") for k, v in row.items()}
        try:
            yield _record_from_csv(cells)
        except (ValueError, TypeError) as exc:
            raise LogMismatch(f"bundle CSV row {reader.line_num} is malformed: {exc}") from None


def _record_from_csv(cells: dict[str, str | None]) -> dict[str, Any]:
    if cells["record"] == "checkpoint":
        return {
            "record": "checkpoint",
            "format": cells["format"],
            "note": cells["note"],
            "size": int(cells["size"] or ""),
            "exported_ms": int(cells["exported_ms"] or ""),
            "filters": json.loads(cells["filters"] or ""),
            "complete": cells["complete"] == "true",
        }
    if cells["record"] == "end":
        return {"record": "end", "events": int(cells["events"] or "")}
    event: dict[str, Any] = {k: cells[k] for k in EVENT_COLUMNS}
    for name in ("v", "time_ms"):
        event[name] = int(event[name] or "")
    event["details"] = json.loads(event["details"] or "")
    return {
        "record": cells["record"],
        "index": int(cells["index"] or ""),
        "event": event,
        "salt": cells["salt"],
        "leaf": cells["leaf"],
        "proof": (cells["proof"] or "").split(),
    }


# -- verifying -----------------------------------------------------------------------------


def verify_bundle(
    records: Iterable[Mapping[str, Any]],
    verifiers: Sequence[NoteVerifier],
    *,
    saved: Checkpoint | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Check a bundle: its checkpoint's signature, each event against its leaf, each inclusion
    proof, index order, and (for a complete bundle) every leaf present and the root recomputed.
    Raises `CheckpointError` or `LogMismatch` (with the first bad index)."""
    iterator = iter(records)
    header = next(iterator, None)
    if header is None or header.get("record") != "checkpoint" or header.get("format") != FORMAT:
        raise LogMismatch(f"bundle does not start with a {FORMAT} checkpoint record")
    checkpoint = _open(str(header.get("note")), verifiers)
    if header.get("size") != checkpoint.size:
        raise LogMismatch("bundle header size differs from its signed checkpoint")
    complete = header.get("complete") is True
    if saved is not None:
        _check_saved(saved, checkpoint, complete)
    compact = CompactRange() if complete else None
    previous, count, ended = -1, 0, False
    for record in iterator:
        if ended:
            raise LogMismatch(f"bundle has records after its end record (after index {previous})")
        if record.get("record") == "end":
            if record.get("events") != count:
                raise LogMismatch(
                    f"bundle end record counts {record.get('events')} events, found {count}"
                )
            ended = True
            continue
        index = record.get("index")
        if record.get("record") != "event" or not isinstance(index, int):
            raise LogMismatch(f"bundle record after index {previous} is not an event record")
        if index <= previous or index >= checkpoint.size:
            raise LogMismatch(
                f"event {index} is out of order or beyond the checkpoint", index=index
            )
        if compact is not None and index != compact.size:
            raise LogMismatch(
                f"event {compact.size} is missing from a complete bundle", index=compact.size
            )
        value = _check_event(index, record, checkpoint)
        if compact is not None:
            compact.append(value)
            if saved is not None and compact.size == saved.size and compact.root() != saved.root:
                raise LogMismatch("bundle does not match the saved checkpoint", index=0)
        previous, count = index, count + 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
    if not ended:
        raise LogMismatch(
            f"bundle is cut off after {count} events (no end record)", index=previous + 1
        )
    if compact is not None:
        if compact.size != checkpoint.size:
            raise LogMismatch(
                f"complete bundle ends after {compact.size} events but its checkpoint covers "
                f"{checkpoint.size}",
                index=compact.size,
            )
        if compact.root() != checkpoint.root:
            raise LogMismatch("complete bundle does not reproduce its checkpoint's root", index=0)
    return BundleReport(checkpoint, count, complete)


def _check_event(index: int, record: Mapping[str, Any], checkpoint: Checkpoint) -> bytes:
    try:
        salt = decode_base64(str(record["salt"]))
        leaf = decode_base64(str(record["leaf"]))
        proof = [decode_base64(str(h)) for h in record["proof"]]
        check_leaf(leaf)
        matches = expected_leaf(record["event"], salt) == leaf
    except (KeyError, TypeError, ValueError) as exc:
        raise LogMismatch(f"event {index} is malformed: {exc}", index=index) from None
    if not matches:
        raise LogMismatch(f"event {index} does not match its leaf", index=index)
    value = leaf_hash(leaf)
    try:
        verify_inclusion(value, index, checkpoint.size, proof, checkpoint.root)
    except ProofError as exc:
        raise LogMismatch(f"event {index}: {exc}", index=index) from None
    return value


def _open(note: str, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    problem: CheckpointError | None = None
    for verifier in verifiers:
        try:
            return open_checkpoint(note, verifier)
        except CheckpointError as exc:
            problem = exc
    raise CheckpointError(f"bundle checkpoint does not verify: {problem}")


def _check_saved(saved: Checkpoint, checkpoint: Checkpoint, complete: bool) -> None:
    if saved.origin != checkpoint.origin:
        raise LogMismatch(f"saved checkpoint is for log {saved.origin!r}")
    if saved.size > checkpoint.size:
        raise LogMismatch(
            f"bundle checkpoint ({checkpoint.size}) is older than the saved one ({saved.size})",
            index=checkpoint.size,
        )
    if saved.size == checkpoint.size and saved.root != checkpoint.root:
        raise LogMismatch(f"two different roots for size {saved.size}: the log forked")
    if saved.size < checkpoint.size and not complete:
        raise LogMismatch(
            "a filtered bundle can't be checked against a saved checkpoint: "
            "export without filters, or check the database"
        )


def _utc(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")
