"""Checkpoints (c2sp.org/tlog-checkpoint): the signed head of the audit log at one size.

A checkpoint is a signed note whose text is the origin line, the tree size in decimal, the base64
root hash, then optional extension lines, each ending in a newline. Nothing in a checkpoint is
trusted until `open_checkpoint` has checked the signature by the log's key; it raises
`CheckpointError` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from securemsg.audit.errors import CheckpointError
from securemsg.audit.merkle import HASH_BYTES
from securemsg.audit.note import (
    NoteSigner,
    NoteVerifier,
    decode_base64,
    encode_base64,
    open_note,
    sign_note,
)

MAX_TREE_SIZE = 2**64 - 1
"""Tree sizes are uint64 in every tlog implementation; larger sizes are refused."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's origin, size and RFC 6962 root hash at that size, plus opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _problem(self.origin, self.size, self.root, self.extensions)
        if problem:
            raise ValueError(problem)

    def text(self) -> str:
        """The note text that gets signed."""
        lines = [self.origin, str(self.size), encode_base64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read checkpoint note text (not a signed note: see `open_checkpoint`)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint has {len(lines)} lines, want at least 3")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise CheckpointError(f"checkpoint size {size_line[:40]!r} is not a decimal number")
        try:
            root = decode_base64(root_line)
        except ValueError:
            raise CheckpointError("checkpoint root is not canonical base64") from None
        size = int(size_line)
        problem = _problem(origin, size, root, extensions)
        if problem:
            raise CheckpointError(problem)
        return cls(origin, size, root, tuple(extensions))


def sign_checkpoint(
    signer: NoteSigner,
    origin: str,
    size: int,
    root: bytes,
    *,
    extensions: Sequence[str] = (),
) -> str:
    """The signed checkpoint note for the log `origin` at `size` leaves with root hash `root`."""
    return sign_note(Checkpoint(origin, size, root, tuple(extensions)).text(), signer)


def open_checkpoint(
    note: str | bytes, verifier: NoteVerifier | str, *, origin: str | None = None
) -> Checkpoint:
    """The checkpoint in `note`, once signed by `verifier` (an object or a verifier key string).

    Signatures by other keys (witnesses, a rotated-out key) are ignored; at least one by `verifier`
    is required and all of them must verify. With `origin`, the checkpoint must be for that log.
    """
    if isinstance(verifier, str):
        verifier = NoteVerifier.parse(verifier)
    checkpoint = Checkpoint.parse(open_note(note, verifier))
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, want {origin!r}")
    return checkpoint


def _problem(origin: str, size: int, root: bytes, extensions: Sequence[str]) -> str | None:
    """What is wrong with these checkpoint fields, or None."""
    if not origin:
        return "checkpoint origin is empty"
    if not 0 <= size <= MAX_TREE_SIZE:
        return f"checkpoint size {size} is outside 0..2**64-1"
    if len(root) != HASH_BYTES:
        return f"checkpoint root of {len(root)} bytes, want {HASH_BYTES}"
    for line in (origin, *extensions):
        if not line:
            return "checkpoint extension line is empty"
        if "\n" in line:
            return "checkpoint line contains a newline"
    return None
