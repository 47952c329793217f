"""Offline verification of a whole log against its checkpoints."""

from __future__ import annotations

import pytest

from securemsg.audit.checkpoint import Checkpoint
from securemsg.audit.errors import LogMismatch
from securemsg.audit.merkle import EMPTY_ROOT, MemoryTree, leaf_hash
from securemsg.audit.verify import LogVerifier, first_bad_index, verify_log

ORIGIN = "audit.example/log"
PAYLOADS = [f"event {i}".encode() for i in range(100)]
TREE = MemoryTree()
for _payload in PAYLOADS:
    TREE.append(_payload)


def checkpoint_at(size: int, origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(origin, size, TREE.root(size))


def test_log_matching_its_checkpoint_is_reported() -> None:
    report = verify_log(PAYLOADS, checkpoint_at(100))
    assert (report.size, report.root, report.checkpoint_size) == (100, TREE.root(), 100)
    assert report.unsigned_leaves == 0


def test_leaves_after_the_checkpoint_are_counted_as_unsigned() -> None:
    report = verify_log(PAYLOADS, checkpoint_at(60))
    assert report.size == 100
    assert report.unsigned_leaves == 40
    assert report.root == TREE.root()


def test_log_matching_saved_and_trusted_checkpoints_passes() -> None:
    report = verify_log(PAYLOADS, checkpoint_at(90), previous=checkpoint_at(33))
    assert report.checkpoint_size == 90


def test_empty_log_matches_empty_checkpoint() -> None:
    report = verify_log([], Checkpoint(ORIGIN, 0, EMPTY_ROOT))
    assert (report.size, report.root) == (0, EMPTY_ROOT)


def test_changed_leaf_is_reported_with_the_checkpoint_that_caught_it() -> None:
    changed = list(PAYLOADS)
    changed[50] = b"rewritten"
    with pytest.raises(LogMismatch, match="first 90 leaves does not match the trusted checkpoint"):
        verify_log(changed, checkpoint_at(90), previous=checkpoint_at(33))
    early = [*PAYLOADS[:20], b"x", *PAYLOADS[21:]]
    with pytest.raises(LogMismatch, match="first 33 leaves does not match the saved checkpoint"):
        verify_log(early, checkpoint_at(90), previous=checkpoint_at(33))


def test_truncated_log_is_reported() -> None:
    with pytest.raises(LogMismatch, match="log ends after 70 leaves but the trusted checkpoint"):
        verify_log(PAYLOADS[:70], checkpoint_at(90))


def test_trusted_checkpoint_older_than_saved_one_is_refused() -> None:
    with pytest.raises(LogMismatch, match="older than the saved one"):
        LogVerifier(checkpoint_at(10), previous=checkpoint_at(20))


def test_checkpoints_of_different_logs_are_refused() -> None:
    with pytest.raises(LogMismatch, match="for log"):
        LogVerifier(checkpoint_at(20), previous=checkpoint_at(10, origin="other.example/log"))


def test_two_roots_for_one_size_are_refused() -> None:
    forked = Checkpoint(ORIGIN, 20, leaf_hash(b"fork"))
    with pytest.raises(LogMismatch, match="disagree"):
        LogVerifier(checkpoint_at(20), previous=forked)


def test_empty_checkpoint_with_wrong_root_fails_at_once() -> None:
    with pytest.raises(LogMismatch, match="first 0 leaves"):
        LogVerifier(Checkpoint(ORIGIN, 0, leaf_hash(b"")))


def test_verifier_accepts_leaves_in_batches_and_as_leaf_hashes() -> None:
    verifier = LogVerifier(checkpoint_at(100), previous=checkpoint_at(64))
    verifier.add_payloads(PAYLOADS[:10])
    verifier.add_leaf_hashes(leaf_hash(p) for p in PAYLOADS[10:64])
    verifier.add_payloads(PAYLOADS[64:])
    assert verifier.size == 100
    assert verifier.finish().root == TREE.root()


def test_leaf_hash_of_wrong_length_names_its_index() -> None:
    verifier = LogVerifier(checkpoint_at(3))
    with pytest.raises(LogMismatch) as caught:
        verifier.add_leaf_hashes([leaf_hash(PAYLOADS[0]), b"short"])
    assert caught.value.index == 1


def test_first_bad_index_finds_the_first_stored_hash_that_differs() -> None:
    stored = [leaf_hash(p) for p in PAYLOADS]
    assert first_bad_index(stored, PAYLOADS) is None
    stored[42] = leaf_hash(b"tampered")
    stored[77] = leaf_hash(b"tampered too")
    assert first_bad_index(stored, PAYLOADS) == 42


def test_first_bad_index_treats_a_missing_entry_as_bad() -> None:
    stored = [leaf_hash(p) for p in PAYLOADS]
    assert first_bad_index(stored[:99], PAYLOADS) == 99
    assert first_bad_index(stored, PAYLOADS[:98]) == 98
