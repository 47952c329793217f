"""Offline verification of a whole audit log against its signed checkpoints.

The leaves stream once through a compact range (O(log n) memory) and the root is compared at each
checkpoint's size, so a verifier holding the leaves and the checkpoints needs no proofs. Every
failure raises `LogMismatch` saying which size and which checkpoint did not match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from itertools import zip_longest

from securemsg.audit.checkpoint import Checkpoint
from securemsg.audit.errors import LogMismatch
from securemsg.audit.merkle import HASH_BYTES, CompactRange, leaf_hash

_LEAF_PREFIX = b"\x00"  # leaf_hash inlined in the per-leaf loop: one call fewer per leaf


@dataclass(frozen=True, slots=True)
class LogReport:
    """What a verified log looks like: its size, its root, and how much of it is signed."""

    size: int
    root: bytes
    checkpoint_size: int

    @property
    def unsigned_leaves(self) -> int:
        """Leaves after the trusted checkpoint: counted, but not yet covered by a signature."""
        return self.size - self.checkpoint_size


@dataclass(frozen=True, slots=True)
class _Target:
    size: int
    root: bytes
    label: str


class LogVerifier:
    """Recompute a log's root leaf by leaf and compare it with checkpoints as their sizes pass.

    `checkpoint` is the trusted (signature-checked) checkpoint; `previous` is an older one the
    verifier saved earlier, so a rewritten history shows up as a mismatch at its size. Feed leaves
    in order with `add_payloads` or `add_leaf_hashes` (batches are fine), then call `finish`.
    """

    def __init__(self, checkpoint: Checkpoint, *, previous: Checkpoint | None = None) -> None:
        targets = [_Target(checkpoint.size, checkpoint.root, "the trusted checkpoint")]
        if previous is not None:
            if previous.origin != checkpoint.origin:
                raise LogMismatch(
                    f"saved checkpoint is for log {previous.origin!r}, "
                    f"the trusted one for {checkpoint.origin!r}"
                )
            if previous.size > checkpoint.size:
                raise LogMismatch(
                    f"trusted checkpoint at size {checkpoint.size} is older than "
                    f"the saved one at size {previous.size}"
                )
            if previous.size == checkpoint.size and previous.root != checkpoint.root:
                raise LogMismatch(
                    f"saved and trusted checkpoints disagree on the root at size {previous.size}"
                )
            targets.insert(0, _Target(previous.size, previous.root, "the saved checkpoint"))
        self._checkpoint_size = checkpoint.size
        self._targets = targets
        self._compact = CompactRange()
        self._check_passed_targets()

    @property
    def size(self) -> int:
        return self._compact.size

    def add_payloads(self, payloads: Iterable[bytes]) -> None:
        """Add the next leaves, given their payloads (the bytes that were leaf-hashed)."""
        compact = self._compact
        next_size = self._next_size()
        for payload in payloads:
            compact.append(sha256(_LEAF_PREFIX + payload).digest())
            if compact.size == next_size:
                self._check_passed_targets()
                next_size = self._next_size()

    def add_leaf_hashes(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add the next leaves, given their RFC 6962 leaf hashes."""
        compact = self._compact
        next_size = self._next_size()
        for value in leaf_hashes:
            if len(value) != HASH_BYTES:
                raise LogMismatch(
                    f"leaf hash {compact.size} of {len(value)} bytes, want {HASH_BYTES}",
                    index=compact.size,
                )
            compact.append(value)
            if compact.size == next_size:
                self._check_passed_targets()
                next_size = self._next_size()

    def finish(self) -> LogReport:
        """Check that every checkpoint was reached and matched; report the log."""
        if self._targets:
            target = self._targets[0]
            raise LogMismatch(
                f"log ends after {self._compact.size} leaves but {target.label} "
                f"covers {target.size}"
            )
        return LogReport(self._compact.size, self._compact.root(), self._checkpoint_size)

    def _next_size(self) -> int:
        return self._targets[0].size if self._targets else -1

    def _check_passed_targets(self) -> None:
        size = self._compact.size
        while self._targets and self._targets[0].size == size:
            target = self._targets.pop(0)
            if self._compact.root() != target.root:
                raise LogMismatch(f"root of the first {size} leaves does not match {target.label}")


def verify_log(
    payloads: Iterable[bytes], checkpoint: Checkpoint, *, previous: Checkpoint | None = None
) -> LogReport:
    """Check a whole log, given every leaf payload in order, against its checkpoints."""
    verifier = LogVerifier(checkpoint, previous=previous)
    verifier.add_payloads(payloads)
    return verifier.finish()


def first_bad_index(leaf_hashes: Iterable[bytes], payloads: Iterable[bytes]) -> int | None:
    """The first index whose stored leaf hash is not the hash of its payload, or None if all match.

    A locator for reports, not a check: a missing hash or payload at the end counts as bad.
    """
    for index, (stored, payload) in enumerate(zip_longest(leaf_hashes, payloads)):
        if stored is None or payload is None or stored != leaf_hash(payload):
            return index
    return None
