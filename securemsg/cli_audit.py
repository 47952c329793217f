"""`securemsg audit ...`: the log's verifier key, integration, queries, exports and verification.

`query`, `export` and `checkpoint` are audited like the API's calls (actor `cli:<os user>`, role
`operator`). `verify` only reads: point it at a copy of the database, or at an export, with the
verifier key from a trusted source. It exits 1 on any failure and names the first bad index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from securemsg.audit.bundle import read_records, verify_bundle
from securemsg.audit.checkpoint import Checkpoint, open_checkpoint
from securemsg.audit.compliance import (
    DEFAULT_REASON,
    Caller,
    ComplianceRefused,
    ComplianceService,
    ExportFormat,
)
from securemsg.audit.errors import AuditError, CheckpointError
from securemsg.audit.events import CLI_SOURCE, OPERATOR_ROLE, Actor, Outcome
from securemsg.audit.integrator import Integrator
from securemsg.audit.keyfile import add_signer, load_signers
from securemsg.audit.legal_bundle import is_legal_bundle, verify_legal_bundle
from securemsg.audit.note import NoteVerifier
from securemsg.audit.scan import scan_database
from securemsg.clock import SystemClock
from securemsg.settings import Settings
from securemsg.storage import migrate
from securemsg.storage.audit import EventFilter, StoredEvent
from securemsg.storage.database import Database
from securemsg.storage.errors import StorageError

FAILED = 1
REFUSED = 2


def add_parser(commands: Any) -> None:
    """Add `audit` and its subcommands to the `securemsg` subparsers."""
    from securemsg.cli import _storage_options

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    actions = audit.add_subparsers(dest="action", required=True)

    key = actions.add_parser("key", help="print the log's verifier key(s), one per line")
    key.add_argument("--add", metavar="NAME", help="add a signing key named NAME (rotation)")

    integrate = actions.add_parser("integrate", help="integrate new events and sign a checkpoint")
    checkpoint = actions.add_parser("checkpoint", help="print the latest signed checkpoint")
    checkpoint.add_argument("-o", "--output", help="write it to this file instead")
    query = actions.add_parser("query", help="list events matching filters")
    query.add_argument("--limit", type=int, default=100, help="events per page (default 100)")
    query.add_argument("--cursor", type=int, help="continue after this index")
    query.add_argument("--format", choices=["table", "ndjson"], default="table")
    export = actions.add_parser("export", help="write an export bundle with proofs")
    export.add_argument("--format", choices=["csv", "ndjson"], required=True)
    export.add_argument("-o", "--output", required=True, help="file to write ('-': stdout)")
    verify = actions.add_parser("verify", help="check the whole log, or an export bundle")
    verify.add_argument(
        "--key",
        action="append",
        default=[],
        help="trusted verifier key string, or a file of them (default: the keys in --keys-dir)",
    )
    verify.add_argument("--checkpoint", help="a checkpoint saved earlier: the log must extend it")
    verify.add_argument("--export", help="check this export bundle instead of the database")
    verify.add_argument("--save-checkpoint", help="after success, save the checkpoint here")
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    for sub in (key, integrate, checkpoint, query, export, verify):
        _storage_options(sub)
        sub.add_argument("--keys-dir", help="server key directory (default ./keys)")
    for sub in (query, export, checkpoint):
        sub.add_argument("--reason", default=DEFAULT_REASON, help="why you are looking (audited)")
    for sub in (query, export):
        sub.add_argument("--client", help="subject: account id or username")
        sub.add_argument("--actor", help="account id or username")
        sub.add_argument(
            "--action", dest="action_filter", help="e.g. login.failed, or a prefix like audit.*"
        )
        sub.add_argument("--purpose")
        sub.add_argument("--outcome", choices=[o.value for o in Outcome])
        sub.add_argument("--since", help="from this time: ISO 8601 (UTC if no zone) or ms")
        sub.add_argument("--until", help="before this time: ISO 8601 or ms")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.action == "key":
            return _key(args, settings)
        if args.action == "verify" and args.export:
            return _verify_export(args, settings)
        return asyncio.run(_with_database(settings, args, _ACTIONS[args.action]))
    except ComplianceRefused as exc:
        print(f"securemsg: audit {args.action}: refused: {exc}", file=sys.stderr)
        return REFUSED
    except AuditError as exc:
        print(f"securemsg: audit {args.action}: FAILED: {exc}", file=sys.stderr)
        index = getattr(exc, "index", None)
        if index is not None:
            print(f"first bad index: {index}", file=sys.stderr)
        return FAILED


def operator() -> Actor:
    """The person at the terminal, as the audit log records them."""
    try:
        return Actor.operator(f"cli:{getpass.getuser()}")
    except (KeyError, OSError):
        return Actor.operator("cli")


def _key(args: argparse.Namespace, settings: Settings) -> int:
    if args.add:
        signer = add_signer(settings.keys_dir, args.add)
        print(signer.verifier.key_string())
        print(
            "added; every key in the file now signs each checkpoint. Publish the key above.",
            file=sys.stderr,
        )
        return 0
    for signer in load_signers(settings.keys_dir):
        print(signer.verifier.key_string())
    return 0


async def _with_database(
    settings: Settings,
    args: argparse.Namespace,
    work: Callable[[Database, Settings, argparse.Namespace], Awaitable[int]],
) -> int:
    url = settings.effective_database_url
    if url.startswith("sqlite") and not _sqlite_file(url).exists():
        raise StorageError(f"no database at {_sqlite_file(url)}")
    database = Database.open(url)
    try:
        if args.action != "verify":  # verify only reads: it may look at a copy
            await migrate.upgrade(database)
        return await work(database, settings, args)
    finally:
        await database.close()


def _sqlite_file(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


async def _integrate(database: Database, settings: Settings, args: argparse.Namespace) -> int:
    integrator = Integrator(
        keys_dir=settings.keys_dir,
        origin=settings.audit_origin,
        max_leaves=settings.audit_integrate_max_leaves,
    )
    written = await integrator.catch_up(database, now_ms=SystemClock().now_ms())
    if written is None:
        print("nothing new to integrate")
    else:
        print(f"integrated: checkpoint at size {written.size}")
    return 0


def _service(database: Database) -> ComplianceService:
    return ComplianceService(database, roles=frozenset({OPERATOR_ROLE}))


def _caller(args: argparse.Namespace) -> Caller:
    return Caller(operator(), CLI_SOURCE, args.reason)


async def _checkpoint(database: Database, settings: Settings, args: argparse.Namespace) -> int:
    latest = await _service(database).checkpoint(_caller(args), now_ms=SystemClock().now_ms())
    _write(args.output, latest.note)
    return 0


async def _query(database: Database, settings: Settings, args: argparse.Namespace) -> int:
    page = await _service(database).query(
        _caller(args),
        _filter(args),
        after=args.cursor,
        limit=args.limit,
        now_ms=SystemClock().now_ms(),
    )
    if args.format == "ndjson":
        for event in page.events:
            print(json.dumps({"index": event.index, **event.fields}, ensure_ascii=False))
    else:
        _print_table(page.events)
    if page.next_cursor is not None:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


async def _export(database: Database, settings: Settings, args: argparse.Namespace) -> int:
    fmt: ExportFormat = "csv" if args.format == "csv" else "ndjson"
    bundle = await _service(database).export(
        _caller(args), _filter(args), format=fmt, now_ms=SystemClock().now_ms()
    )
    out: TextIO
    with _open_output(args.output) as out:
        async for chunk in bundle.chunks:
            out.write(chunk)
    print(f"exported up to checkpoint size {bundle.header.size}", file=sys.stderr)
    return 0


async def _verify(database: Database, settings: Settings, args: argparse.Namespace) -> int:
    verifiers = _verifiers(args, settings)
    saved = _saved_checkpoint(args, verifiers)
    report = await scan_database(
        database, verifiers, saved=saved, progress=None if args.quiet else _Progress()
    )
    print(
        f"ok: {report.size} events verified against {report.checkpoints_checked} signed "
        f"checkpoint(s); latest checkpoint at size {report.checkpoint.size}"
    )
    if report.unsigned_leaves:
        print(f"{report.unsigned_leaves} newer event(s) are checked but not yet signed")
    if args.save_checkpoint:
        _write(args.save_checkpoint, report.note)
    return 0


def _verify_export(args: argparse.Namespace, settings: Settings) -> int:
    verifiers = _verifiers(args, settings)
    with Path(args.export).open("rb") as file:
        if is_legal_bundle(file.read(64)):
            return _verify_legal(args, verifiers)
    saved = _saved_checkpoint(args, verifiers)
    progress = None if args.quiet else _Progress()
    path = Path(args.export)
    with path.open(encoding="utf-8", newline="") as file:
        report = verify_bundle(
            read_records(file),
            verifiers,
            saved=saved,
            progress=None if progress is None else (lambda done: progress(done, 0)),
        )
    kind = "complete" if report.complete else "filtered"
    print(
        f"ok: {kind} export of {report.events} events, each proven in the log at checkpoint "
        f"size {report.checkpoint.size}"
    )
    if args.save_checkpoint:
        with path.open(encoding="utf-8", newline="") as file:
            header = next(read_records(file))
        _write(args.save_checkpoint, str(header["note"]))
    return 0


def _verify_legal(args: argparse.Namespace, verifiers: Sequence[NoteVerifier]) -> int:
    """Check a legal export bundle (docs/legal-requests.md), offline."""
    if args.checkpoint or args.save_checkpoint:
        print("securemsg: audit verify: a legal export has no checkpoint options", file=sys.stderr)
        return REFUSED
    report = verify_legal_bundle(Path(args.export).read_bytes(), verifiers)
    print(
        f"ok: legal export of request {report.request_id}: {report.envelopes} envelopes and "
        f"{report.audit.events} audit events, signed by {report.signer}; the events are proven "
        f"in the log at checkpoint size {report.audit.checkpoint.size}"
    )
    return 0


_ACTIONS: dict[str, Callable[[Database, Settings, argparse.Namespace], Awaitable[int]]] = {
    "integrate": _integrate,
    "checkpoint": _checkpoint,
    "query": _query,
    "export": _export,
    "verify": _verify,
}


def _verifiers(args: argparse.Namespace, settings: Settings) -> list[NoteVerifier]:
    if not args.key:
        return [signer.verifier for signer in load_signers(settings.keys_dir)]
    found: list[NoteVerifier] = []
    for value in args.key:
        path = Path(value)
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [value]
        found.extend(NoteVerifier.parse(line) for line in lines if line.strip())
    return found


def _saved_checkpoint(
    args: argparse.Namespace, verifiers: Sequence[NoteVerifier]
) -> Checkpoint | None:
    if not args.checkpoint:
        return None
    note = Path(args.checkpoint).read_text(encoding="utf-8")
    problem: CheckpointError | None = None
    for verifier in verifiers:
        try:
            return open_checkpoint(note, verifier)
        except CheckpointError as exc:
            problem = exc
    raise CheckpointError(f"saved checkpoint {args.checkpoint} does not verify: {problem}")


def _filter(args: argparse.Namespace) -> EventFilter:
    return EventFilter(
        subject=args.client,
        actor=args.actor,
        action=args.action_filter,
        purpose=args.purpose,
        outcome=args.outcome,
        since_ms=_time_ms(args.since),
        until_ms=_time_ms(args.until),
    )


def _time_ms(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"cannot read {value!r} as a time (ISO 8601 or ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _print_table(events: Sequence[StoredEvent]) -> None:
    columns = ("index", "time (UTC)", "action", "outcome", "actor", "role", "subject", "purpose")
    rows = [columns]
    for event in events:
        f = event.fields
        moment = datetime.fromtimestamp(f["time_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            (
                str(event.index),
                moment,
                str(f["action"]),
                str(f["outcome"]),
                str(f["actor_name"] or f["actor_id"] or "-"),
                str(f["actor_role"] or "-"),
                str(f["subject_name"] or f["subject_id"] or "-"),
                str(f["purpose"] or "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


class _Progress:
    """Progress lines on stderr, at most one a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 1.0 and done != total:
            return
        self._last = now
        share = f" of {total} ({100 * done // total}%)" if total else ""
        print(f"verified {done}{share} events", file=sys.stderr, flush=True)


def _open_output(name: str) -> Any:
    if name == "-":
        return contextlib.nullcontext(sys.stdout)
    return Path(name).open("w", encoding="utf-8", newline="")


def _write(name: str | None, text: str) -> None:
    if name:
        Path(name).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
