"""Ed25519 signing keys and detached-signature checks.

This is the only place Ed25519 comes from; callers hold raw bytes (32-byte seeds and public
keys, 64-byte signatures). `verify_signature` raises `InvalidSignature` on any failure.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
import nacl.utils

from securemsg.crypto.errors import InvalidSignature

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class SigningKey:
    """An Ed25519 private key, kept as its 32-byte seed."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"ed25519 seed of {len(seed)} bytes, want {SEED_BYTES}")
        self._key = nacl.signing.SigningKey(bytes(seed))

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key from the operating system's random source."""
        return cls(nacl.utils.random(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte detached signature of `message`."""
        return self._key.sign(message).signature

    def __repr__(self) -> str:
        # Never print the seed.
        return f"SigningKey(public_key={self.public_key.hex()})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 detached signature; raise `InvalidSignature` unless it is valid."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidSignature(
            f"ed25519 public key of {len(public_key)} bytes, want {PUBLIC_KEY_BYTES}"
        )
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature(
            f"ed25519 signature of {len(signature)} bytes, want {SIGNATURE_BYTES}"
        )
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except nacl.exceptions.CryptoError as error:
        # BadSignatureError, and nacl's ValueError for a public key that is not a curve point.
        raise InvalidSignature("ed25519 signature does not verify") from error
