"""Passphrase sealing for the SDK keystore: Argon2id derives the key, XChaCha20-Poly1305 seals.

`PassphraseKey.derive` runs Argon2id once; `seal` then encrypts any number of snapshots under that
key with a fresh random nonce each, and `open_sealed` checks the passphrase and the whole file.
A wrong passphrase raises `PassphraseMismatch`; any other change to the file raises
`DecryptionFailed`. Callers never pick salts or nonces.

    offset  size  field
    0       4     magic "SMKS"
    4       1     format version = 1
    5       1     kdf = 1 (Argon2id, version 0x13)
    6       4     time_cost      u32
    10      4     memory_kib     u32
    14      4     parallelism    u32
    18      16    salt
    34      32    passphrase check = BLAKE2b-256(key=master, "securemsg/v1/keystore-check")
    66      24    nonce
    90      ..    XChaCha20-Poly1305(key, nonce, plaintext, ad = bytes 0..90) with
                  key = BLAKE2b-256(key=master, "securemsg/v1/keystore-key")

master = Argon2id(passphrase, salt, time_cost, memory_kib, parallelism, 32 bytes). The check value
tells a wrong passphrase apart from a damaged file; it lets nobody test a guess faster than the
ciphertext already does (each guess still costs one Argon2id run).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

import argon2.low_level
import nacl.bindings
import nacl.exceptions
import nacl.utils

from securemsg.crypto.errors import DecryptionFailed

MAGIC = b"SMKS"
FORMAT_VERSION = 1
KDF_ARGON2ID = 1
SALT_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
_HEADER = struct.Struct(">4sBBIII16s32s24s")
HEADER_BYTES = _HEADER.size  # 90
_KEY_PURPOSE = b"securemsg/v1/keystore-key"
_CHECK_PURPOSE = b"securemsg/v1/keystore-check"


class PassphraseMismatch(DecryptionFailed):
    """The passphrase does not open this keystore."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. The default follows RFC 9106's second recommendation with one lane."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 1

    def check(self, limit: KdfParams | None = None) -> None:
        """Raise `ValueError` for parameters Argon2 refuses or that exceed `limit`."""
        if self.time_cost < 1 or self.parallelism < 1 or self.memory_kib < 8 * self.parallelism:
            raise ValueError(f"argon2id parameters {self} are below the minimum")
        if limit is not None and (
            self.time_cost > limit.time_cost
            or self.memory_kib > limit.memory_kib
            or self.parallelism > limit.parallelism
        ):
            raise ValueError(f"argon2id parameters {self} exceed the limit {limit}")


# A header may ask for at most this much work: a damaged file must not make opening take minutes.
MAX_KDF = KdfParams(time_cost=64, memory_kib=4 * 1024 * 1024, parallelism=16)


class PassphraseKey:
    """A key derived from a passphrase, bound to its salt and cost so it can seal again."""

    __slots__ = ("_check", "_key", "params", "salt")

    def __init__(self, params: KdfParams, salt: bytes, master: bytes) -> None:
        self.params = params
        self.salt = salt
        self._key = _subkey(master, _KEY_PURPOSE)
        self._check = _subkey(master, _CHECK_PURPOSE)

    @classmethod
    def derive(cls, passphrase: bytes, params: KdfParams | None = None) -> PassphraseKey:
        """Derive a key for a new keystore, with a fresh random salt."""
        params = params or KdfParams()
        params.check(MAX_KDF)
        salt = nacl.utils.random(SALT_BYTES)
        return cls(params, salt, _argon2id(passphrase, salt, params))

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt `plaintext` under this key with a fresh nonce; the result opens with
        `open_sealed` and the same passphrase."""
        header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            KDF_ARGON2ID,
            self.params.time_cost,
            self.params.memory_kib,
            self.params.parallelism,
            self.salt,
            self._check,
            nacl.utils.random(NONCE_BYTES),
        )
        nonce = header[-NONCE_BYTES:]
        return header + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, header, nonce, self._key
        )

    def __repr__(self) -> str:
        return f"PassphraseKey(params={self.params})"


def open_sealed(data: bytes, passphrase: bytes) -> tuple[bytes, PassphraseKey]:
    """Return the plaintext of a sealed keystore and the key to seal its next version.

    Raise `PassphraseMismatch` if the passphrase is wrong and `DecryptionFailed` if the file is
    not a keystore, uses an unknown format, or was changed in any byte.
    """
    if len(data) < HEADER_BYTES + TAG_BYTES:
        raise DecryptionFailed(f"keystore of {len(data)} bytes is truncated")
    magic, version, kdf, time_cost, memory_kib, parallelism, salt, check, nonce = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise DecryptionFailed("not a securemsg keystore")
    if version != FORMAT_VERSION or kdf != KDF_ARGON2ID:
        raise DecryptionFailed(f"keystore format {version}/{kdf} is not supported")
    params = KdfParams(time_cost, memory_kib, parallelism)
    try:
        params.check(MAX_KDF)
    except ValueError as error:
        raise DecryptionFailed(f"keystore header is damaged: {error}") from None
    key = PassphraseKey(params, salt, _argon2id(passphrase, salt, params))
    if not hmac.compare_digest(key._check, check):
        raise PassphraseMismatch("wrong passphrase")
    header = data[:HEADER_BYTES]
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            data[HEADER_BYTES:], header, nonce, key._key
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("keystore was modified: it does not authenticate") from error
    return plaintext, key


def _argon2id(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
    return argon2.low_level.hash_secret_raw(
        passphrase,
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=KEY_BYTES,
        type=argon2.low_level.Type.ID,
    )


def _subkey(master: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(purpose + b"\x00", key=master, digest_size=KEY_BYTES).digest()


# -- records of a keystore's history file -------------------------------------------------------

_RECORD_AD = b"securemsg/v1/history-record"


def new_record_key() -> bytes:
    """A random key for a keystore's history file (kept inside the sealed keystore)."""
    return nacl.utils.random(KEY_BYTES)


def seal_record(key: bytes, plaintext: bytes, position: int) -> bytes:
    """Encrypt one history record; `position` (its byte offset in the file) is authenticated,
    so a record moved, removed before it, or copied elsewhere does not open."""
    nonce = nacl.utils.random(NONCE_BYTES)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, _record_ad(position), nonce, key
    )


def open_record(key: bytes, sealed: bytes, position: int) -> bytes:
    """The plaintext of a record sealed at `position`; `DecryptionFailed` if it does not open."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionFailed(f"history record of {len(sealed)} bytes is truncated")
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[NONCE_BYTES:], _record_ad(position), sealed[:NONCE_BYTES], key
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("history record does not authenticate") from error


def _record_ad(position: int) -> bytes:
    return _RECORD_AD + position.to_bytes(8, "big")
