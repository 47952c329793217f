"""Throughput of the audit tree: appending to MemoryTree, proofs on it, and verifying a whole log.

Run with `python bench/audit_tree.py [leaves]` (default 1,000,000). Prints numbers; not a test.
"""

from __future__ import annotations

import sys
import time

from securemsg.audit.checkpoint import Checkpoint
from securemsg.audit.merkle import (
    MemoryTree,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from securemsg.audit.verify import verify_log


def main() -> None:
    leaves = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    payloads = [
        b"audit event %d with some pseudonymous ids and a commitment" % i for i in range(leaves)
    ]

    tree = MemoryTree()
    start = time.perf_counter()
    for payload in payloads:
        tree.append(payload)
    seconds = time.perf_counter() - start
    rate = leaves / seconds
    print(f"MemoryTree.append: {leaves:,} leaves in {seconds:.2f} s = {rate:,.0f} leaves/s")

    root = tree.root()
    index, size1 = leaves // 3, leaves // 2 + 1
    plan = inclusion_plan(index, leaves)
    start = time.perf_counter()
    for _ in range(1000):
        proof = inclusion_proof(tree, index, leaves)
        verify_inclusion(leaf_hash(payloads[index]), index, leaves, proof, root)
    seconds = time.perf_counter() - start
    print(
        f"inclusion proof + verify at size {leaves:,}: {len(plan.node_ids)} node reads, "
        f"{seconds / 1000 * 1e6:.0f} us each"
    )
    start = time.perf_counter()
    for _ in range(1000):
        proof = consistency_proof(tree, size1, leaves)
        verify_consistency(size1, leaves, proof, tree.root(size1), root)
    seconds = time.perf_counter() - start
    print(
        f"consistency proof + verify {size1:,} -> {leaves:,}: "
        f"{len(consistency_plan(size1, leaves).node_ids)} node reads, "
        f"{seconds / 1000 * 1e6:.0f} us each"
    )

    checkpoint = Checkpoint("bench.example/log", leaves, root)
    previous = Checkpoint("bench.example/log", size1, tree.root(size1))
    del tree
    start = time.perf_counter()
    report = verify_log(payloads, checkpoint, previous=previous)
    seconds = time.perf_counter() - start
    assert report.size == leaves
    rate = leaves / seconds
    print(f"verify_log: {leaves:,} leaves in {seconds:.2f} s = {rate:,.0f} leaves/s")


if __name__ == "__main__":
    main()
