"""The RFC 6962 Merkle tree of the audit log: hashing, node addressing, proofs and their checks.

Proofs are built only from *complete* nodes, the hashes of perfect power-of-two subtrees addressed
by (level, index), which never change once written; a storage layer keeps one row per complete node
and answers any proof with O(log n) reads. Every check raises `ProofError`; none returns False.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Protocol

from securemsg.audit.errors import ProofError

HASH_BYTES = 32
EMPTY_ROOT = sha256(b"").digest()
"""The root of the tree with no leaves, SHA-256 of the empty string (RFC 6962 §2.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return sha256(_NODE_PREFIX + left + right).digest()


@dataclass(frozen=True, slots=True)
class NodeID:
    """A complete node: the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level).

    Level 0 nodes are the leaf hashes. A node exists in a tree of `size` leaves once `end <= size`
    and its hash never changes afterwards.
    """

    level: int
    index: int

    @property
    def begin(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


@dataclass(frozen=True, slots=True)
class Node:
    """A complete node and its hash: one row of a storage layer's node table."""

    level: int
    index: int
    hash: bytes


class HashReader(Protocol):
    """Anything that can look up complete nodes, such as `MemoryTree` or a database table."""

    def read_nodes(self, ids: Sequence[NodeID]) -> Sequence[bytes]:
        """Return the hash of each complete node, in the order asked; raise if one is missing."""
        ...


def covering_nodes(begin: int, end: int) -> list[NodeID]:
    """The complete nodes that exactly cover leaves [begin, end), largest (leftmost) first.

    `begin` must be a multiple of a power of two at least `end - begin`, which holds for [0, size)
    and for the right part of any node; then the nodes follow the binary digits of `end - begin`.
    """
    nodes = []
    remaining = end - begin
    while remaining > 0:
        level = remaining.bit_length() - 1
        nodes.append(NodeID(level, begin >> level))
        begin += 1 << level
        remaining -= 1 << level
    return nodes


def frontier(size: int) -> list[NodeID]:
    """The complete nodes covering [0, size), largest first: all that a root or an append needs."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return covering_nodes(0, size)


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of adjacent complete nodes, largest first, into their RFC 6962 root.

    RFC 6962 splits a range at its largest power of two, so the leftmost node is always the left
    child: root = node_hash(h0, node_hash(h1, ... node_hash(h[-2], h[-1]))).
    """
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for piece in reversed(hashes[:-1]):
        result = sha256(_NODE_PREFIX + piece + result).digest()
    return result


class CompactRange:
    """The hashes of the complete nodes covering [0, size): O(log n) state of an append-only tree.

    Appending a leaf merges equal-sized neighbours like a binary counter; `root()` folds the rest.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Start from a tree of `size` leaves, given the hashes of `frontier(size)` in order."""
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} frontier nodes, got {len(hashes)}"
            )
        for value in hashes:
            _check_hash("frontier hash", value)
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The hashes of `frontier(self.size)`, largest node first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf, given its leaf hash (the caller checks it is 32 bytes)."""
        hashes = self._hashes
        carry = self._size
        value = leaf_hash
        while carry & 1:
            value = sha256(_NODE_PREFIX + hashes.pop() + value).digest()
            carry >>= 1
        hashes.append(value)
        self._size += 1

    def append_nodes(self, leaf_hash: bytes) -> list[Node]:
        """Add the next leaf and return every complete node this creates, the leaf itself first."""
        _check_hash("leaf hash", leaf_hash)
        hashes = self._hashes
        index = self._size
        level = 0
        value = leaf_hash
        created = [Node(0, index, value)]
        while index & 1:
            value = sha256(_NODE_PREFIX + hashes.pop() + value).digest()
            level += 1
            index >>= 1
            created.append(Node(level, index, value))
        hashes.append(value)
        self._size += 1
        return created

    def root(self) -> bytes:
        return fold_right(self._hashes)


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The RFC 6962 root of a whole tree given all its leaf hashes, in O(log n) memory."""
    compact = CompactRange()
    for value in leaf_hashes:
        _check_hash("leaf hash", value)
        compact.append(value)
    return compact.root()


def tree_root(reader: HashReader, size: int) -> bytes:
    """The root of the first `size` leaves, from the O(log n) nodes of `frontier(size)`."""
    ids = frontier(size)
    return fold_right(_read(reader, ids))


def new_nodes_for_append(
    size: int, frontier_hashes: Sequence[bytes], leaf_hashes: Iterable[bytes]
) -> list[Node]:
    """The complete nodes created by appending `leaf_hashes` to a tree of `size` leaves.

    `frontier_hashes` are the stored hashes of `frontier(size)`, in that order: the only reads an
    append needs, however long the batch. The result (leaves included) is ready for one bulk insert.
    """
    compact = CompactRange(size, frontier_hashes)
    created: list[Node] = []
    for value in leaf_hashes:
        created.extend(compact.append_nodes(value))
    return created


class MemoryTree:
    """An in-memory tree that keeps every complete node, for tests and as the storage reference.

    `append` stores the leaf hash and the nodes it completes (amortised O(1), at most O(log n)
    hashes), so any proof for any earlier size can be built from it.
    """

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        # _levels[level][index] is the hash of NodeID(level, index).
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_data: bytes) -> int:
        """Append one leaf given its data; return its index."""
        return self.append_leaf_hash(sha256(_LEAF_PREFIX + leaf_data).digest())

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append one leaf given its leaf hash; return its index."""
        _check_hash("leaf hash", leaf_hash)
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf_hash)
        level, position, value = 0, index, leaf_hash
        while position & 1:
            value = sha256(_NODE_PREFIX + levels[level][position - 1] + value).digest()
            level += 1
            position >>= 1
            if level == len(levels):
                levels.append([])
            levels[level].append(value)
        return index

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        hashes = []
        for node in ids:
            row = self._levels[node.level] if 0 <= node.level < len(self._levels) else []
            if not 0 <= node.index < len(row):
                raise ProofError(
                    f"no complete node at level {node.level}, index {node.index} "
                    f"in a tree of size {self.size}"
                )
            hashes.append(row[node.index])
        return hashes

    def root(self, size: int | None = None) -> bytes:
        """The root at `size` leaves (default: all of them)."""
        return tree_root(self, self.size if size is None else size)


# Proof generation. A plan names the complete nodes a proof needs; `assemble` turns their hashes
# into the RFC 9162 proof. Async storage fetches `plan.node_ids` itself; sync readers use
# `inclusion_proof` / `consistency_proof`.


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The complete nodes a proof is built from, in proof order, and which of them to fold.

    A proof hash is usually one complete node. At most one is the hash of an *ephemeral* node, a
    right-border subtree not yet full in the tree of the proof's size (RFC 6962 hashes it as
    MTH(D[begin:size])). Storage has no row for it, so the plan lists its complete pieces at
    `node_ids[fold_begin:fold_end]`, largest first, and `assemble` folds them with `fold_right`.
    """

    node_ids: tuple[NodeID, ...]
    fold_begin: int = 0
    fold_end: int = 0

    def assemble(self, hashes: Sequence[bytes]) -> list[bytes]:
        """The proof, given the hash of each of `node_ids` in order."""
        if len(hashes) != len(self.node_ids):
            raise ProofError(f"proof plan needs {len(self.node_ids)} hashes, got {len(hashes)}")
        begin, end = self.fold_begin, self.fold_end
        if end - begin < 2:
            return list(hashes)
        return [*hashes[:begin], fold_right(hashes[begin:end]), *hashes[end:]]


def _path_plan(start: NodeID, size: int) -> tuple[list[NodeID], int, int]:
    """The siblings on the way from complete node `start` to the root of a tree of `size` leaves.

    Walking up, a sibling wholly inside [0, size) is a complete node; a sibling starting at or past
    `size` does not exist (RFC 6962 promotes the lone left child, so nothing is added); a sibling
    straddling `size` is the ephemeral node, replaced by the complete nodes covering [begin, size).
    """
    ids: list[NodeID] = []
    fold_begin = fold_end = 0
    level, index = start.level, start.index
    # The root is the first node on the way up that starts at 0 and covers all `size` leaves.
    while index > 0 or (1 << level) < size:
        sibling = NodeID(level, index ^ 1)
        if sibling.end <= size:
            ids.append(sibling)
        elif sibling.begin < size:
            fold_begin = len(ids)
            ids.extend(covering_nodes(sibling.begin, size))
            fold_end = len(ids)
        level, index = level + 1, index >> 1
    return ids, fold_begin, fold_end


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Plan the RFC 9162 §2.1.3.1 inclusion proof for leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    ids, fold_begin, fold_end = _path_plan(NodeID(0, index), size)
    return ProofPlan(tuple(ids), fold_begin, fold_end)


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """Plan the RFC 9162 §2.1.4.1 consistency proof from the tree of `size1` to that of `size2`.

    The proof is the inclusion path, in the tree of `size2`, of the largest complete node ending at
    `size1`, preceded by that node unless `size1` is a power of two (the verifier knows it: it is
    the old root). Equal sizes and `size1 == 0` need no proof hashes.
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return ProofPlan(())
    level = (size1 & -size1).bit_length() - 1
    start = NodeID(level, (size1 - 1) >> level)
    ids, fold_begin, fold_end = _path_plan(start, size2)
    if start.index == 0:
        return ProofPlan(tuple(ids), fold_begin, fold_end)
    return ProofPlan((start, *ids), fold_begin + 1, fold_end + 1)


def inclusion_proof(reader: HashReader, index: int, size: int) -> list[bytes]:
    """The inclusion proof for leaf `index` in the tree of `size` leaves, read from `reader`."""
    plan = inclusion_plan(index, size)
    return plan.assemble(_read(reader, plan.node_ids))


def consistency_proof(reader: HashReader, size1: int, size2: int) -> list[bytes]:
    """The consistency proof from the tree of `size1` leaves to that of `size2`, from `reader`."""
    plan = consistency_plan(size1, size2)
    return plan.assemble(_read(reader, plan.node_ids))


def _read(reader: HashReader, ids: Sequence[NodeID]) -> list[bytes]:
    if not ids:
        return []
    hashes = list(reader.read_nodes(ids))
    if len(hashes) != len(ids):
        raise ProofError(f"asked for {len(ids)} nodes, the reader returned {len(hashes)}")
    return hashes


# Proof verification, following RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `proof` puts leaf `index` (hash `leaf_hash`) in the tree of `size` and `root`."""
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes(proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    result = leaf_hash
    for sibling in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof of {len(proof)} hashes is too long")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof of {len(proof)} hashes is too short")
    if not hmac.compare_digest(result, root):
        raise ProofError(
            f"inclusion proof for leaf {index} does not lead to the root at size {size}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that `proof` shows the tree of `size2`, `root2`, extends the tree of `size1`, `root1`.

    Equal sizes need an empty proof and identical roots (compared as given, as the upstream test
    vectors require); the empty tree must have the empty root. A proof from size 0 to a larger
    size is refused: it would prove nothing, and a caller with no earlier checkpoint has nothing
    to check.
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError(
                f"consistency proof between equal sizes has {len(proof)} hashes, want 0"
            )
        if size1 == 0 and not hmac.compare_digest(root1, EMPTY_ROOT):
            raise ProofError("root of the empty tree is not sha-256 of the empty string")
        if not hmac.compare_digest(root1, root2):
            raise ProofError(f"two different roots for the same size {size1}")
        return
    if size1 == 0:
        raise ProofError("consistency proof from the empty tree proves nothing")
    _check_hash("old root", root1)
    _check_hash("new root", root2)
    _check_proof_hashes(proof)
    if not proof:
        raise ProofError(f"consistency proof from size {size1} to size {size2} is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old = new = path[0]
    for sibling in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof of {len(proof)} hashes is too long")
        if fn & 1 or fn == sn:
            old = node_hash(sibling, old)
            new = node_hash(sibling, new)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            new = node_hash(new, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof of {len(proof)} hashes is too short")
    if not hmac.compare_digest(old, root1):
        raise ProofError(f"consistency proof does not lead to the old root at size {size1}")
    if not hmac.compare_digest(new, root2):
        raise ProofError(f"consistency proof does not lead to the new root at size {size2}")


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_BYTES:
        raise ProofError(f"{what} of {len(value)} bytes, want {HASH_BYTES}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        _check_hash(f"proof hash {position}", value)
