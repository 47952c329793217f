"""The integrator: new leaves become tree nodes and a signed checkpoint, about once a second.

A step reads the latest checkpoint, its frontier and the leaves after it (a read transaction),
computes the new complete nodes and root outside any lock, then inserts them with the signed
checkpoint in one short write transaction, unless another integrator moved the log first. On
PostgreSQL a transaction-level advisory lock keeps nodes from integrating at once, and the
checkpoint's primary key makes a lost race harmless. A step with no new leaves writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from securemsg.audit.checkpoint import Checkpoint
from securemsg.audit.errors import AuditError, CheckpointError
from securemsg.audit.keyfile import load_or_create_signers, load_signers
from securemsg.audit.merkle import CompactRange, Node, leaf_hash
from securemsg.audit.note import NoteSigner, NoteVerifier, sign_note
from securemsg.audit.scan import open_stored
from securemsg.clock import Clock
from securemsg.storage.audit_tree import AuditTree, StoredCheckpoint
from securemsg.storage.database import Database
from securemsg.storage.errors import StorageError

log = logging.getLogger("securemsg.audit")


class Integrator:
    """Integrates the log with the keys in `keys_dir` (loaded, or created, by `load_keys`)."""

    def __init__(
        self,
        *,
        keys_dir: Path | None = None,
        origin: str = "",
        max_leaves: int = 4096,
        interval_seconds: float = 1.0,
        create_key: bool = False,
        signers: Sequence[NoteSigner] = (),
    ) -> None:
        self._keys_dir = keys_dir
        self._origin = origin
        self._create_key = create_key
        self._signers = list(signers)
        self.max_leaves = max(1, max_leaves)
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def load_keys(self) -> None:
        """Read the key file (creating it when allowed and absent); idempotent."""
        if self._signers or self._keys_dir is None:
            return
        if self._create_key:
            self._signers = load_or_create_signers(self._keys_dir, self._origin or None)
        else:
            self._signers = load_signers(self._keys_dir)

    @property
    def signers(self) -> list[NoteSigner]:
        self.load_keys()
        if not self._signers:
            raise CheckpointError("no audit signing key is loaded")
        return self._signers

    @property
    def verifiers(self) -> list[NoteVerifier]:
        return [signer.verifier for signer in self.signers]

    @property
    def origin(self) -> str:
        """The log's name on every checkpoint: the setting, else the first key's name."""
        return self._origin or self.signers[0].name

    async def step(self, database: Database, *, now_ms: int) -> StoredCheckpoint | None:
        """Integrate up to `max_leaves` new leaves; the new checkpoint, or None if none."""
        signers, origin = self.signers, self.origin
        async with database.read() as conn:
            tree = AuditTree(conn)
            latest = await tree.latest_checkpoint()
            if latest is not None:
                self._check_continuity(latest)
            size = 0 if latest is None else latest.size
            leaves = await tree.leaves(size, self.max_leaves)
            dense = [leaf for offset, (index, leaf) in enumerate(leaves) if index == size + offset]
            if len(dense) < len(leaves):
                log.error("audit leaf %d is missing; integration stops there", size + len(dense))
            if latest is not None and not dense:
                return None
            frontier = await tree.frontier_hashes(size)
        compact = CompactRange(size, frontier)
        nodes: list[Node] = []
        for leaf in dense:
            nodes.extend(compact.append_nodes(leaf_hash(leaf)))
        root = compact.root()
        note = sign_note(Checkpoint(origin, compact.size, root).text(), *signers)
        checkpoint = StoredCheckpoint(compact.size, root, note, now_ms)
        async with database.write() as conn:
            tree = AuditTree(conn)
            if not await tree.lock_integration():
                return None  # another node is integrating
            current = await tree.latest_checkpoint()
            if _size(current) != _size(latest):
                return None  # another integrator moved the log since we read it
            await tree.add(nodes, checkpoint)
        return checkpoint

    async def integrate_within(
        self, tree: AuditTree, *, now_ms: int, lock_timeout_seconds: float = 10.0
    ) -> StoredCheckpoint:
        """Integrate every leaf so far, those of the caller's own write transaction included,
        inside that transaction, and return the signed checkpoint that covers them (it commits
        or rolls back with the transaction). For a caller that hands out a proof of its own
        audit event at once: a legal export (docs/legal-requests.md). Call it after `record`:
        on PostgreSQL the append lock then keeps every later leaf out until commit, and this
        waits for (instead of skipping) another node's integration step."""
        signers, origin = self.signers, self.origin
        deadline = asyncio.get_running_loop().time() + lock_timeout_seconds
        while not await tree.lock_integration():
            if asyncio.get_running_loop().time() > deadline:
                raise StorageError("audit integration is busy; try again")
            await asyncio.sleep(0.01)
        latest = await tree.latest_checkpoint()
        if latest is not None:
            self._check_continuity(latest)
        size = 0 if latest is None else latest.size
        compact = CompactRange(size, await tree.frontier_hashes(size))
        nodes: list[Node] = []
        while leaves := await tree.leaves(compact.size, self.max_leaves):
            for index, leaf in leaves:
                if index != compact.size:
                    raise CheckpointError(f"audit leaf {compact.size} is missing")
                nodes.extend(compact.append_nodes(leaf_hash(leaf)))
        if latest is not None and compact.size == latest.size:
            return latest
        root = compact.root()
        note = sign_note(Checkpoint(origin, compact.size, root).text(), *signers)
        checkpoint = StoredCheckpoint(compact.size, root, note, now_ms)
        await tree.add(nodes, checkpoint)
        return checkpoint

    async def catch_up(self, database: Database, *, now_ms: int) -> StoredCheckpoint | None:
        """Step until every leaf is integrated; the last checkpoint written, if any."""
        last = None
        while (written := await self.step(database, now_ms=now_ms)) is not None:
            last = written
        return last

    def start(self, database: Database, clock: Clock) -> None:
        """Run `catch_up` every `interval_seconds` in the background until `stop`."""
        self.load_keys()
        self._task = asyncio.create_task(self._run(database, clock), name="audit-integrator")

    async def stop(self, database: Database, clock: Clock) -> None:
        """Stop the background task, then integrate what is left (best effort)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            await self.catch_up(database, now_ms=clock.now_ms())
        except (StorageError, AuditError) as exc:
            log.warning("final audit integration skipped: %s", exc)

    async def _run(self, database: Database, clock: Clock) -> None:
        failing = False
        while True:
            try:
                await self.catch_up(database, now_ms=clock.now_ms())
                failing = False
            except (StorageError, AuditError) as exc:
                # Recording stays fail-closed regardless; only signing lags. Say so once.
                if not failing:
                    log.error("audit integration failing: %s", exc)
                failing = True
            await asyncio.sleep(self.interval_seconds)

    def _check_continuity(self, latest: StoredCheckpoint) -> None:
        """Refuse to extend a log whose head was signed by other keys or for another origin."""
        try:
            open_stored(latest, self.verifiers, self.origin)
        except CheckpointError as exc:
            raise CheckpointError(
                f"refusing to sign: the latest checkpoint is not ours ({exc}); "
                "check --keys-dir and the audit_origin setting"
            ) from None


def _size(checkpoint: StoredCheckpoint | None) -> int | None:
    return None if checkpoint is None else checkpoint.size
