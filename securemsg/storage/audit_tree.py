"""The audit tree in SQL: complete nodes, signed checkpoints, and the reads proofs and checks need.

Only the integrator (audit/integrator.py) writes nodes and checkpoints, in one transaction per
step. A proof reads the O(log n) nodes its plan names (audit/merkle.py) in one SELECT; no proof
rehashes the table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from securemsg.audit.errors import ProofError
from securemsg.audit.merkle import Node, NodeID, consistency_plan, frontier, inclusion_plan
from securemsg.storage.audit import EVENT_SELECT, StoredEvent, stored_event
from securemsg.storage.models import audit_checkpoints, audit_events, audit_leaves, audit_nodes

_MAX_IDS_PER_SELECT = 4000  # two bound parameters each; SQLite allows 32766
_INTEGRATE_LOCK_KEY = 0x5EC0_A0D2  # arbitrary, fixed: the advisory lock id for integration


@dataclasses.dataclass(frozen=True, slots=True)
class ScanRow:
    """One leaf as stored, for `securemsg audit verify`."""

    index: int
    leaf: bytes
    leaf_hash: bytes | None
    event: StoredEvent | None


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_ms: int


class AuditTree:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock_integration(self) -> bool:
        """Take the integrator's lock for this transaction; False if another node holds it.
        (SQLite's write transactions are already serialised.)"""
        if self.conn.dialect.name != "postgresql":
            return True
        query = text("SELECT pg_try_advisory_xact_lock(:key)")
        return bool((await self.conn.execute(query, {"key": _INTEGRATE_LOCK_KEY})).scalar())

    async def snapshot(self) -> None:
        """Make the rest of this read transaction see one snapshot (first statement only).
        SQLite transactions always do; PostgreSQL needs REPEATABLE READ."""
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))

    # -- checkpoints ---------------------------------------------------------------------

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        query = select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _checkpoint(row._mapping)

    async def checkpoint(self, size: int) -> StoredCheckpoint | None:
        query = select(audit_checkpoints).where(audit_checkpoints.c.size == size)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _checkpoint(row._mapping)

    async def checkpoints_between(self, low: int, high: int) -> list[StoredCheckpoint]:
        """Stored checkpoints with low <= size < high, smallest first."""
        c = audit_checkpoints.c
        query = select(audit_checkpoints).where(c.size >= low, c.size < high).order_by(c.size)
        return [_checkpoint(row._mapping) for row in await self.conn.execute(query)]

    # -- nodes and proofs ----------------------------------------------------------------

    async def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """The hash of each complete node, in the order asked; `ProofError` if one is missing."""
        found: dict[tuple[int, int], bytes] = {}
        wanted = sorted({(node.level, node.index) for node in ids})
        for start in range(0, len(wanted), _MAX_IDS_PER_SELECT):
            query, params = _select_nodes(wanted[start : start + _MAX_IDS_PER_SELECT])
            for level, index, value in await self.conn.execute(query, params):
                found[(int(level), int(index))] = bytes(value)
        hashes = []
        for node in ids:
            value = found.get((node.level, node.index))
            if value is None:
                raise ProofError(
                    f"audit tree has no node at level {node.level}, index {node.index}"
                )
            hashes.append(value)
        return hashes

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        plan = inclusion_plan(index, size)
        return plan.assemble(await self.read_nodes(plan.node_ids))

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        plan = consistency_plan(size1, size2)
        return plan.assemble(await self.read_nodes(plan.node_ids))

    async def frontier_hashes(self, size: int) -> list[bytes]:
        return await self.read_nodes(frontier(size))

    async def nodes_ending_in(self, begin: int, end: int) -> dict[tuple[int, int], bytes]:
        """Stored nodes above the leaves whose last leaf is in [begin, end): what leaves
        begin..end-1 complete when appended. Keyed by (level, index)."""
        c = audit_nodes.c
        ranges = []
        level = 1
        while (end >> level) > 0:
            low, high = begin >> level, (end >> level) - 1
            if low <= high:
                ranges.append(and_(c.level == level, c.node_index.between(low, high)))
            level += 1
        if not ranges:
            return {}
        rows = await self.conn.execute(select(c.level, c.node_index, c.hash).where(or_(*ranges)))
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}

    async def leaf_nodes_from(self, size: int) -> int:
        """How many leaf hashes are stored at index `size` or later (0 in an intact log)."""
        c = audit_nodes.c
        query = select(func.count()).where(c.level == 0, c.node_index >= size)
        return int((await self.conn.execute(query)).scalar_one())

    async def add(self, nodes: Iterable[Node], checkpoint: StoredCheckpoint) -> None:
        """Insert the nodes of one integration step and the checkpoint that signs them."""
        rows = [{"level": n.level, "node_index": n.index, "hash": n.hash} for n in nodes]
        if rows:
            await self.conn.execute(audit_nodes.insert(), rows)
        await self.conn.execute(
            audit_checkpoints.insert().values(
                size=checkpoint.size,
                root=checkpoint.root,
                note=checkpoint.note,
                signed_ms=checkpoint.signed_ms,
            )
        )

    # -- leaves --------------------------------------------------------------------------

    async def leaves(self, begin: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` leaves from index `begin` on, in order (a gap shows as a jump)."""
        c = audit_leaves.c
        query = select(c.leaf_index, c.leaf).where(c.leaf_index >= begin)
        rows = await self.conn.execute(query.order_by(c.leaf_index).limit(limit))
        return [(int(index), bytes(leaf)) for index, leaf in rows]

    async def leaves_at(self, indexes: Sequence[int]) -> dict[int, bytes]:
        """The leaves at the given indexes (those that exist)."""
        c = audit_leaves.c
        found: dict[int, bytes] = {}
        for start in range(0, len(indexes), _MAX_IDS_PER_SELECT):
            chunk = list(indexes[start : start + _MAX_IDS_PER_SELECT])
            rows = await self.conn.execute(
                select(c.leaf_index, c.leaf).where(c.leaf_index.in_(chunk))
            )
            found.update((int(index), bytes(leaf)) for index, leaf in rows)
        return found

    async def leaf_count(self) -> int:
        """One past the highest leaf index (the number of leaves in an intact log)."""
        last = (await self.conn.execute(select(func.max(audit_leaves.c.leaf_index)))).scalar()
        return 0 if last is None else int(last) + 1

    async def scan(self, begin: int, limit: int) -> list[ScanRow]:
        """Rows for a full check: each leaf from `begin`, in index order, with its stored leaf
        hash and its readable event (None when that row is missing)."""
        leaf, event, node = audit_leaves.c, audit_events.c, audit_nodes.c
        joined = audit_leaves.outerjoin(audit_events, event.leaf_index == leaf.leaf_index)
        joined = joined.outerjoin(
            audit_nodes, and_(node.level == 0, node.node_index == leaf.leaf_index)
        )
        query = (
            select(leaf.leaf_index, leaf.leaf, node.hash, *EVENT_SELECT)
            .select_from(joined)
            .where(leaf.leaf_index >= begin)
            .order_by(leaf.leaf_index)
            .limit(limit)
        )
        return [
            ScanRow(
                int(row[0]),
                bytes(row[1]),
                None if row[2] is None else bytes(row[2]),
                None if row[3] is None else stored_event(int(row[3]), row[4:-1], row[-1]),
            )
            for row in await self.conn.execute(query)
        ]


def _select_nodes(wanted: Sequence[tuple[int, int]]) -> tuple[Select[Any], dict[str, int]]:
    """One SELECT of the given nodes that both engines answer from the primary key, and its
    parameters. (A row-value IN would be shorter, but SQLite answers it with a full scan.)

    A proof's few nodes use a statement built once per count, `(level = :l0 AND node_index =
    :i0) OR …`, so it is not rebuilt per request; larger sets (exports) group by level,
    `(level = l AND node_index IN (…)) OR …`, which also stays within SQLite's expression depth.
    """
    if len(wanted) <= _PAIRS_PER_PROOF:
        params = {}
        for n, (level, index) in enumerate(wanted):
            params[f"l{n}"], params[f"i{n}"] = level, index
        return _pairs_query(len(wanted)), params
    by_level: dict[int, list[int]] = {}
    for level, index in wanted:
        by_level.setdefault(level, []).append(index)
    c = audit_nodes.c
    query = select(c.level, c.node_index, c.hash).where(
        or_(*(and_(c.level == level, c.node_index.in_(found)) for level, found in by_level.items()))
    )
    return query, {}


_PAIRS_PER_PROOF = 64


@functools.cache
def _pairs_query(count: int) -> Select[Any]:
    c = audit_nodes.c
    return select(c.level, c.node_index, c.hash).where(
        or_(
            *(
                and_(c.level == bindparam(f"l{n}"), c.node_index == bindparam(f"i{n}"))
                for n in range(count)
            )
        )
    )


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(
        int(row["size"]), bytes(row["root"]), str(row["note"]), int(row["signed_ms"])
    )
