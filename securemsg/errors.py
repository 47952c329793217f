"""The root of every exception securemsg raises on purpose.

    SecuremsgError
     ├── protocol.errors.ProtocolError      a peer broke the wire protocol (has a wire code)
     │    └── ...                            one subclass per family, see protocol/errors.py
     ├── crypto.errors.CryptoError          a signature, MAC or key check failed
     │    ├── InvalidSignature
     │    └── DecryptionFailed
     ├── audit.errors.AuditError            a proof or checkpoint did not verify
     └── storage.errors.StorageError        the database refused or is unreachable

Callers catch the family they can handle; anything else is a bug and reaches the outermost edge.
"""


class SecuremsgError(Exception):
    """Base class of all deliberate securemsg errors."""
