"""The tree, its complete nodes and its proofs, against a naive recursive reading of RFC 9162."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemsg.audit.errors import ProofError
from securemsg.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    Node,
    NodeID,
    ProofPlan,
    consistency_plan,
    consistency_proof,
    covering_nodes,
    frontier,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    new_nodes_for_append,
    node_hash,
    root_from_leaf_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

# --- A naive, independent transcription of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 -------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _sha(b"")
    if len(leaves) == 1:
        return _sha(b"\x00" + leaves[0])
    k = _split(len(leaves))
    return _sha(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_root(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_root(leaves[:k])]


def naive_consistency(m: int, leaves: list[bytes]) -> list[bytes]:
    return naive_subproof(m, leaves, True)


def leaves_of(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def tree_of(n: int) -> MemoryTree:
    tree = MemoryTree()
    for data in leaves_of(n):
        tree.append(data)
    return tree


SMALL = 40
TREE = tree_of(SMALL)
LEAVES = leaves_of(SMALL)


# --- hashing ------------------------------------------------------------------------------------


def test_hashes_use_rfc6962_domain_separation() -> None:
    assert _sha(b"") == EMPTY_ROOT
    assert leaf_hash(b"abc") == _sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _sha(b"\x01" + b"L" * 32 + b"R" * 32)


def test_root_of_empty_tree_is_sha256_of_nothing() -> None:
    assert MemoryTree().root() == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(71))
def test_memory_tree_root_matches_naive_root(size: int) -> None:
    tree = tree_of(size)
    want = naive_root(leaves_of(size))
    assert tree.size == size
    assert tree.root() == want
    assert root_from_leaf_hashes(leaf_hash(data) for data in leaves_of(size)) == want


def test_memory_tree_keeps_roots_of_every_earlier_size() -> None:
    tree = tree_of(70)
    for size in range(71):
        assert tree.root(size) == naive_root(leaves_of(size))


def test_memory_tree_stores_exactly_the_complete_nodes() -> None:
    tree = tree_of(13)
    for level in range(5):
        for index in range(16):
            node = NodeID(level, index)
            if node.end <= 13:
                assert tree.read_nodes([node]) == [naive_root(leaves_of(13)[node.begin : node.end])]
            else:
                with pytest.raises(ProofError):
                    tree.read_nodes([node])


# --- node addressing ----------------------------------------------------------------------------


def test_frontier_follows_the_binary_digits_of_the_size() -> None:
    assert frontier(0) == []
    assert frontier(1) == [NodeID(0, 0)]
    assert frontier(6) == [NodeID(2, 0), NodeID(1, 2)]
    assert frontier(13) == [NodeID(3, 0), NodeID(2, 2), NodeID(0, 12)]


def test_covering_nodes_tile_the_range_without_gaps() -> None:
    for begin, end in [(8, 13), (16, 17), (0, 31), (32, 63)]:
        nodes = covering_nodes(begin, end)
        assert nodes[0].begin == begin
        assert nodes[-1].end == end
        assert all(a.end == b.begin for a, b in itertools.pairwise(nodes))


# --- proof generation -----------------------------------------------------------------------------


def test_inclusion_proofs_match_rfc_path_for_all_small_trees() -> None:
    for size in range(1, SMALL + 1):
        root = naive_root(LEAVES[:size])
        for index in range(size):
            proof = inclusion_proof(TREE, index, size)
            assert proof == naive_path(index, LEAVES[:size]), (index, size)
            verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, root)


def test_consistency_proofs_match_rfc_subproof_for_all_small_trees() -> None:
    for size2 in range(1, SMALL + 1):
        root2 = naive_root(LEAVES[:size2])
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(TREE, size1, size2)
            assert proof == naive_consistency(size1, LEAVES[:size2]), (size1, size2)
            verify_consistency(size1, size2, proof, naive_root(LEAVES[:size1]), root2)


def test_proofs_need_only_logarithmically_many_node_reads() -> None:
    size = 1_000_000
    for index in (0, 1, 499_999, 524_288, 999_999):
        assert len(inclusion_plan(index, size).node_ids) <= 2 * size.bit_length()
    for size1 in (1, 3, 65_537, 999_998):
        assert len(consistency_plan(size1, size).node_ids) <= 2 * size.bit_length() + 1


def test_inclusion_plan_folds_the_ephemeral_right_sibling_from_complete_nodes() -> None:
    # In a tree of 7 leaves, leaf 0's path needs MTH(D[4:7]), which is no stored node: it is
    # folded from the complete nodes (1, 2) = D[4:6] and (0, 6) = D[6:7].
    plan = inclusion_plan(0, 7)
    assert plan.node_ids == (NodeID(0, 1), NodeID(1, 1), NodeID(1, 2), NodeID(0, 6))
    assert (plan.fold_begin, plan.fold_end) == (2, 4)
    assert len(plan.assemble(TREE.read_nodes(plan.node_ids))) == 3


def test_proof_plan_refuses_the_wrong_number_of_hashes() -> None:
    plan = inclusion_plan(3, 10)
    with pytest.raises(ProofError, match="needs"):
        plan.assemble([b"\x00" * 32])


def test_consistency_plan_is_empty_for_equal_sizes_and_from_zero() -> None:
    assert consistency_plan(5, 5) == ProofPlan(())
    assert consistency_plan(0, 5) == ProofPlan(())


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (-1, 3)])
def test_inclusion_proof_refused_for_index_outside_tree(index: int, size: int) -> None:
    with pytest.raises(ProofError, match="outside"):
        inclusion_proof(TREE, index, size)


def test_consistency_proof_refused_when_sizes_go_backwards() -> None:
    with pytest.raises(ProofError):
        consistency_proof(TREE, 6, 5)


def test_proof_refused_for_size_beyond_stored_tree() -> None:
    with pytest.raises(ProofError, match="no complete node"):
        inclusion_proof(TREE, 0, SMALL + 9)


# --- appends for storage ------------------------------------------------------------------------


def test_new_nodes_for_append_are_the_nodes_memory_tree_stores() -> None:
    hashes = [leaf_hash(data) for data in leaves_of(37)]
    nodes: list[Node] = []
    size = 0
    for batch in (hashes[:1], hashes[1:2], hashes[2:11], hashes[11:11], hashes[11:]):
        frontier_hashes = [_node_hash_from(nodes, node) for node in frontier(size)]
        nodes.extend(new_nodes_for_append(size, frontier_hashes, batch))
        size += len(batch)
    tree = tree_of(37)
    for node in nodes:
        assert tree.read_nodes([NodeID(node.level, node.index)]) == [node.hash]
    # one row per complete node: 37 leaves + 18 + 9 + 4 + 2 + 1
    assert len(nodes) == len({(n.level, n.index) for n in nodes}) == 71


def _node_hash_from(nodes: list[Node], wanted: NodeID) -> bytes:
    return next(n.hash for n in nodes if n.level == wanted.level and n.index == wanted.index)


def test_compact_range_refuses_a_frontier_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="frontier"):
        CompactRange(6, [b"\x00" * 32])


def test_tree_root_from_frontier_reads_matches_memory_tree() -> None:
    assert tree_root(TREE, 29) == naive_root(LEAVES[:29])


# --- verification failures ----------------------------------------------------------------------


def test_inclusion_rejected_for_flipped_bit_in_any_proof_hash() -> None:
    size, index = 27, 13
    proof = inclusion_proof(TREE, index, size)
    root = naive_root(LEAVES[:size])
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = bytes([bad[position][0] ^ 1]) + bad[position][1:]
        with pytest.raises(ProofError, match="does not lead"):
            verify_inclusion(leaf_hash(LEAVES[index]), index, size, bad, root)


def test_inclusion_rejected_for_short_hashes() -> None:
    proof = inclusion_proof(TREE, 2, 5)
    root = naive_root(LEAVES[:5])
    with pytest.raises(ProofError, match="leaf hash of 31 bytes"):
        verify_inclusion(leaf_hash(LEAVES[2])[:31], 2, 5, proof, root)
    with pytest.raises(ProofError, match="proof hash 1 of 0 bytes"):
        verify_inclusion(leaf_hash(LEAVES[2]), 2, 5, [proof[0], b"", *proof[1:]], root)


def test_inclusion_rejected_for_proof_too_long_or_too_short() -> None:
    proof = inclusion_proof(TREE, 2, 5)
    root = naive_root(LEAVES[:5])
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(leaf_hash(LEAVES[2]), 2, 5, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(leaf_hash(LEAVES[2]), 2, 5, proof[:-1], root)


def test_consistency_rejected_for_wrong_old_root() -> None:
    proof = consistency_proof(TREE, 6, 11)
    with pytest.raises(ProofError, match="old root"):
        verify_consistency(6, 11, proof, naive_root(LEAVES[:5]), naive_root(LEAVES[:11]))


def test_consistency_rejected_for_wrong_new_root() -> None:
    proof = consistency_proof(TREE, 6, 11)
    with pytest.raises(ProofError, match="new root"):
        verify_consistency(6, 11, proof, naive_root(LEAVES[:6]), naive_root(LEAVES[:12]))


def test_consistency_between_equal_sizes_needs_equal_roots_and_no_proof() -> None:
    root = naive_root(LEAVES[:4])
    verify_consistency(4, 4, [], root, root)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(4, 4, [], root, naive_root(LEAVES[:3]))
    with pytest.raises(ProofError, match="want 0"):
        verify_consistency(4, 4, [root], root, root)


def test_consistency_from_empty_tree_is_refused() -> None:
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 3, [], EMPTY_ROOT, naive_root(LEAVES[:3]))


# --- properties ---------------------------------------------------------------------------------

BIG = tree_of(300)
BIG_LEAVES = leaves_of(300)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=300))
    return draw(st.integers(min_value=0, max_value=size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(min_value=1, max_value=300))
    return draw(st.integers(min_value=1, max_value=size2)), size2


@given(index_and_size(), st.data())
def test_inclusion_proof_verifies_and_breaks_when_any_bit_flips(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    root = BIG.root(size)
    proof = inclusion_proof(BIG, index, size)
    verify_inclusion(leaf_hash(BIG_LEAVES[index]), index, size, proof, root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        flipped = bytearray(bad[position])
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad[position] = bytes(flipped)
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(BIG_LEAVES[index]), index, size, bad, root)


@given(index_and_size())
def test_inclusion_proof_fails_for_a_different_leaf(case: tuple[int, int]) -> None:
    index, size = case
    proof = inclusion_proof(BIG, index, size)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"not a leaf"), index, size, proof, BIG.root(size))


@given(two_sizes())
def test_consistency_proof_verifies_and_fails_against_another_old_root(
    sizes: tuple[int, int],
) -> None:
    size1, size2 = sizes
    proof = consistency_proof(BIG, size1, size2)
    verify_consistency(size1, size2, proof, BIG.root(size1), BIG.root(size2))
    other = MemoryTree()
    for data in BIG_LEAVES[: size1 - 1]:
        other.append(data)
    other.append(b"rewritten history")
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, other.root(), BIG.root(size2))


@given(st.lists(st.binary(max_size=40), max_size=80))
def test_memory_tree_root_matches_naive_root_for_any_leaves(leaves: list[bytes]) -> None:
    tree = MemoryTree()
    for data in leaves:
        tree.append(data)
    assert tree.root() == naive_root(leaves)
