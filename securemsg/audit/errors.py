"""Exceptions raised when the audit log does not check out.

    AuditError
     ├── ProofError        an inclusion or consistency proof does not verify or cannot be built
     ├── NoteKeyError      a signer or verifier key string is malformed
     ├── CheckpointError   a signed note or checkpoint is malformed, forged, or not signed by us
     └── LogMismatch       the leaves do not reproduce a stored leaf hash or a checkpoint root

Every check in `securemsg.audit` raises one of these; none returns False.
"""

from __future__ import annotations

from securemsg.errors import SecuremsgError


class AuditError(SecuremsgError):
    """A proof, checkpoint or log did not verify."""


class ProofError(AuditError):
    """A Merkle proof does not verify, or was asked for outside the tree."""


class NoteKeyError(AuditError):
    """A signed-note signer or verifier key string is malformed."""


class CheckpointError(AuditError):
    """A signed note or checkpoint is malformed, or lacks a valid signature by the trusted key."""


class LogMismatch(AuditError):
    """The leaves of a log do not reproduce what was stored or signed.

    `index` is the first leaf found wrong when one leaf is to blame, else None.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
