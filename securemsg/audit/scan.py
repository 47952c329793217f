"""Checking a stored audit log from the leaves up: `securemsg audit verify` on a database.

`LogScan` takes the rows in index order and checks that the leaves are dense from 0, that every
readable event reproduces its leaf (the commitment), that every stored node matches the leaves,
and that the root matches every signed checkpoint as its size passes. The first failure raises
`LogMismatch` with the first bad index. `scan_database` feeds it from SQL in batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from hashlib import sha256

from securemsg.audit.checkpoint import Checkpoint, open_checkpoint
from securemsg.audit.errors import CheckpointError, LogMismatch
from securemsg.audit.events import check_leaf, expected_leaf
from securemsg.audit.merkle import CompactRange
from securemsg.audit.note import NoteVerifier
from securemsg.storage.audit_tree import AuditTree, ScanRow, StoredCheckpoint
from securemsg.storage.database import Database

Progress = Callable[[int, int], None]
log = logging.getLogger("securemsg.audit")


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A root the leaves must reproduce at `size`: a signed checkpoint."""

    size: int
    root: bytes
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class ScanReport:
    size: int
    root: bytes
    checkpoint: Checkpoint
    checkpoints_checked: int
    note: str = ""
    """The signed note of `checkpoint`, to save for the next run's `--checkpoint`."""

    @property
    def unsigned_leaves(self) -> int:
        """Leaves recorded after the latest checkpoint: checked, but not yet signed."""
        return self.size - self.checkpoint.size


class LogScan:
    """Check leaves fed in index order against their events, stored nodes and checkpoints.

    `integrated` is the size of the latest checkpoint: every complete node below it must be
    stored and correct; `targets` are the signed roots to meet, in increasing size.
    """

    def __init__(self, targets: Sequence[Target], *, integrated: int) -> None:
        self._targets = sorted(targets, key=lambda t: t.size)
        self._integrated = integrated
        self._compact = CompactRange()
        self._last_good = 0
        self.checked = 0
        self._check_targets()

    @property
    def size(self) -> int:
        return self._compact.size

    def add_targets(self, targets: Sequence[Target]) -> None:
        """More roots to meet; each must be beyond the leaves checked so far."""
        for target in targets:
            if target.size <= self.size:
                raise ValueError(f"target at size {target.size} is already behind the scan")
        self._targets = sorted([*self._targets, *targets], key=lambda t: t.size)

    def add(self, leaves: Sequence[ScanRow], nodes: Mapping[tuple[int, int], bytes]) -> None:
        """Check the next leaves; `nodes` holds the stored nodes above level 0 they complete."""
        for item in leaves:
            index = self._compact.size
            if item.index != index:
                raise LogMismatch(f"leaf {index} is missing", index=index)
            _check_event(item)
            value = sha256(b"\x00" + item.leaf).digest()
            if item.leaf_hash is not None and item.leaf_hash != value:
                raise LogMismatch(f"stored hash of leaf {index} does not match it", index=index)
            if item.leaf_hash is None and index < self._integrated:
                raise LogMismatch(f"leaf {index} has no stored hash", index=index)
            for node in self._compact.append_nodes(value)[1:]:
                if (node.index + 1) << node.level > self._integrated:
                    break
                if nodes.get((node.level, node.index)) != node.hash:
                    begin = node.index << node.level
                    raise LogMismatch(
                        f"stored node {node.level}/{node.index} over leaves "
                        f"[{begin}, {(node.index + 1) << node.level}) does not match them",
                        index=begin,
                    )
            if self._targets and self._targets[0].size == self._compact.size:
                self._check_targets()

    def finish(self, checkpoint: Checkpoint) -> ScanReport:
        if self._targets:
            target = self._targets[0]
            raise LogMismatch(
                f"log ends after {self.size} leaves but {target.label} covers {target.size}",
                index=self.size,
            )
        return ScanReport(self.size, self._compact.root(), checkpoint, self.checked)

    def _check_targets(self) -> None:
        size = self._compact.size
        while self._targets and self._targets[0].size == size:
            target = self._targets.pop(0)
            if self._compact.root() != target.root:
                raise LogMismatch(
                    f"leaves [{self._last_good}, {size}) do not reproduce the root of "
                    f"{target.label}: one of them was changed, removed or reordered",
                    index=self._last_good,
                )
            self._last_good = size
            self.checked += 1


def _check_event(item: ScanRow) -> None:
    """The event must reproduce the leaf byte for byte (which also makes the leaf canonical)."""
    if item.event is None:
        try:
            check_leaf(item.leaf)
        except ValueError as exc:
            raise LogMismatch(f"leaf {item.index} is malformed: {exc}", index=item.index) from None
        raise LogMismatch(f"readable event {item.index} is missing", index=item.index)
    try:
        expected = expected_leaf(item.event.fields, item.event.salt)
    except (ValueError, TypeError, KeyError):
        expected = b""
    if expected != item.leaf:
        raise LogMismatch(
            f"event {item.index} does not match its leaf: the event or the leaf was changed",
            index=item.index,
        )


def open_stored(
    stored: StoredCheckpoint, verifiers: Sequence[NoteVerifier], origin: str | None = None
) -> Checkpoint:
    """The checkpoint in a stored note, once signed by one of `verifiers`, matching its row."""
    problem: CheckpointError | None = None
    for verifier in verifiers:
        try:
            checkpoint = open_checkpoint(stored.note, verifier, origin=origin)
        except CheckpointError as exc:
            problem = exc
            continue
        if (checkpoint.size, checkpoint.root) != (stored.size, stored.root):
            raise CheckpointError(f"checkpoint row {stored.size} does not match its signed note")
        return checkpoint
    raise CheckpointError(f"stored checkpoint at size {stored.size}: {problem}")


async def scan_database(
    database: Database,
    verifiers: Sequence[NoteVerifier],
    *,
    saved: Checkpoint | None = None,
    batch: int = 20_000,
    progress: Progress | None = None,
) -> ScanReport:
    """Check the whole stored log, in one read snapshot, against every stored checkpoint and
    `saved` (a checkpoint kept from earlier). Raises `LogMismatch` or `CheckpointError`."""
    async with database.read() as conn:
        tree = AuditTree(conn)
        await tree.snapshot()
        latest_row = await tree.latest_checkpoint()
        if latest_row is None:
            raise CheckpointError("the log has no checkpoint yet: start the server or integrate")
        latest = open_stored(latest_row, verifiers)
        targets = [Target(latest.size, latest.root, f"the latest checkpoint ({latest.size})")]
        if saved is not None:
            _check_saved(saved, latest)
            targets.append(Target(saved.size, saved.root, f"the saved checkpoint ({saved.size})"))
        if await tree.leaf_nodes_from(latest.size):
            raise LogMismatch(
                f"leaf hashes are stored beyond the latest checkpoint ({latest.size}): "
                "later checkpoints were deleted",
                index=latest.size,
            )
        total = await tree.leaf_count()
        scan = LogScan(targets, integrated=latest.size)
        await _scan_batches(tree, scan, verifiers, latest, batch, progress, total)
        return dataclasses.replace(scan.finish(latest), note=latest_row.note)


async def _scan_batches(
    tree: AuditTree,
    scan: LogScan,
    verifiers: Sequence[NoteVerifier],
    latest: Checkpoint,
    batch: int,
    progress: Progress | None,
    total: int,
) -> None:
    begin = 0
    pending = asyncio.ensure_future(tree.scan(begin, batch))
    try:
        while rows := await pending:
            end = rows[-1].index + 1
            scan.add_targets(
                [
                    _target(open_stored(stored, verifiers, latest.origin))
                    for stored in await tree.checkpoints_between(begin + 1, end + 1)
                    if stored.size <= latest.size
                ]
            )
            nodes = await tree.nodes_ending_in(begin, end)
            # Read the next batch while this one is checked (one query in flight at a time).
            pending = asyncio.ensure_future(tree.scan(end, batch))
            await asyncio.sleep(0)
            scan.add(rows, nodes)
            begin = end
            if progress is not None:
                progress(scan.size, total)
    finally:
        # On a failure, let the read in flight finish before the transaction ends.
        await asyncio.wait([pending])
        if not pending.cancelled() and pending.exception() is not None:
            log.debug("read after a failed check also failed: %s", pending.exception())


def _target(checkpoint: Checkpoint) -> Target:
    return Target(checkpoint.size, checkpoint.root, f"the checkpoint at size {checkpoint.size}")


def _check_saved(saved: Checkpoint, latest: Checkpoint) -> None:
    if saved.origin != latest.origin:
        raise LogMismatch(f"saved checkpoint is for log {saved.origin!r}, not {latest.origin!r}")
    if saved.size > latest.size:
        raise LogMismatch(
            f"the latest checkpoint ({latest.size}) is older than the saved one ({saved.size}): "
            "the log was truncated or rolled back",
            index=latest.size,
        )
