"""An account's identity key (AIK) and a device's key pair, with purpose-bound signatures.

Every signature securemsg makes is over `purpose || 0x00 || message`, so a signature made for one
purpose (an envelope) can never be replayed as another (a device list). `to_bytes` output is
private key material for the SDK keystore, which encrypts it at rest; `repr` never shows it.

    IdentityKey.to_bytes():  version 0x01 || Ed25519 seed (32)                          = 33 bytes
    DeviceKeys.to_bytes():   version 0x01 || Ed25519 seed (32) || X25519 secret (32)    = 65 bytes
"""

from __future__ import annotations

import hashlib

import nacl.public
import nacl.utils

from securemsg.crypto.errors import CryptoError
from securemsg.crypto.signing import SigningKey, verify_signature
from securemsg.protocol.devices import DevicePublicKeys

KEY_FORMAT_VERSION = 1
SEED_BYTES = 32
_IDENTITY_BYTES = 1 + SEED_BYTES
_DEVICE_BYTES = 1 + 2 * SEED_BYTES
_DEVICE_SIGNING_SEED = b"securemsg/v1/device-signing-seed"
_DEVICE_ENCRYPTION_SEED = b"securemsg/v1/device-encryption-seed"


def purpose_message(purpose: bytes, message: bytes) -> bytes:
    """The bytes actually signed for `message` under `purpose` (NUL-terminated, so prefix-free)."""
    if b"\x00" in purpose:
        raise ValueError("a purpose string cannot contain NUL")
    return b"".join((purpose, b"\x00", message))


def verify_for_purpose(public_key: bytes, purpose: bytes, message: bytes, signature: bytes) -> None:
    """Check a purpose-bound Ed25519 signature; raise `InvalidSignature` unless it is valid."""
    verify_signature(public_key, purpose_message(purpose, message), signature)


class IdentityKey:
    """An account identity key (AIK): Ed25519, signs device certificates and device lists."""

    __slots__ = ("_signing",)

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """Deterministic key from a 32-byte seed (tests, and restoring from the keystore)."""
        return cls(SigningKey.from_seed(seed))

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityKey:
        _check_format(data, _IDENTITY_BYTES, "identity key")
        return cls(SigningKey.from_seed(data[1:]))

    def to_bytes(self) -> bytes:
        return bytes((KEY_FORMAT_VERSION,)) + self._signing.seed

    @property
    def public_key(self) -> bytes:
        return self._signing.public_key

    def sign(self, purpose: bytes, message: bytes) -> bytes:
        return self._signing.sign(purpose_message(purpose, message))

    def __repr__(self) -> str:
        return f"IdentityKey(public_key={self.public_key.hex()})"


class DeviceKeys:
    """A device's Ed25519 signing key (signs envelopes) and X25519 key (receives content keys)."""

    __slots__ = ("_encryption", "_signing")

    def __init__(self, signing: SigningKey, encryption_secret: bytes) -> None:
        if len(encryption_secret) != SEED_BYTES:
            raise ValueError(f"x25519 secret of {len(encryption_secret)} bytes, want 32")
        self._signing = signing
        self._encryption = nacl.public.PrivateKey(bytes(encryption_secret))

    @classmethod
    def generate(cls) -> DeviceKeys:
        return cls(SigningKey.generate(), nacl.utils.random(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceKeys:
        """Deterministic keys from one 32-byte seed, each derived with its own purpose."""
        if len(seed) != SEED_BYTES:
            raise ValueError(f"device seed of {len(seed)} bytes, want {SEED_BYTES}")
        signing_seed = hashlib.blake2b(_DEVICE_SIGNING_SEED, key=seed, digest_size=32).digest()
        secret = hashlib.blake2b(_DEVICE_ENCRYPTION_SEED, key=seed, digest_size=32).digest()
        return cls(SigningKey.from_seed(signing_seed), secret)

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceKeys:
        _check_format(data, _DEVICE_BYTES, "device keys")
        return cls(SigningKey.from_seed(data[1:33]), data[33:])

    def to_bytes(self) -> bytes:
        return b"".join((bytes((KEY_FORMAT_VERSION,)), self._signing.seed, self.encryption_secret))

    @property
    def signing_key(self) -> bytes:
        """The Ed25519 public key."""
        return self._signing.public_key

    @property
    def encryption_key(self) -> bytes:
        """The X25519 public key."""
        return bytes(self._encryption.public_key)

    @property
    def public_keys(self) -> DevicePublicKeys:
        return DevicePublicKeys(self.signing_key, self.encryption_key)

    @property
    def encryption_secret(self) -> bytes:
        """The X25519 private key: for `securemsg.crypto` modules only."""
        return bytes(self._encryption)

    def sign(self, purpose: bytes, message: bytes) -> bytes:
        return self._signing.sign(purpose_message(purpose, message))

    def __repr__(self) -> str:
        return (
            f"DeviceKeys(signing_key={self.signing_key.hex()},"
            f" encryption_key={self.encryption_key.hex()})"
        )


def _check_format(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise CryptoError(f"{what} of {len(data)} bytes, want {size}")
    if data[0] != KEY_FORMAT_VERSION:
        raise CryptoError(f"{what} format version {data[0]} is not supported")
