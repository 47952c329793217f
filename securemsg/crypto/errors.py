"""Exceptions raised when a cryptographic check fails.

Every failed check raises one of these; no crypto function reports failure by returning False.
"""

from __future__ import annotations

from securemsg.errors import SecuremsgError


class CryptoError(SecuremsgError):
    """A signature, MAC or key check failed."""


class InvalidSignature(CryptoError):
    """A signature is malformed, was made by another key, or covers other bytes."""


class DecryptionFailed(CryptoError):
    """A ciphertext did not authenticate under the given key."""
