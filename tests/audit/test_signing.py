"""The Ed25519 door the audit log signs through (securemsg.crypto.signing)."""

from __future__ import annotations

import pytest

from securemsg.crypto.errors import CryptoError, InvalidSignature
from securemsg.crypto.signing import SigningKey, verify_signature
from securemsg.errors import SecuremsgError

# RFC 8032 §7.1, TEST 1: the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

KEY = SigningKey.from_seed(RFC8032_SEED)


def test_rfc8032_vector_signs_and_verifies() -> None:
    assert KEY.public_key == RFC8032_PUBLIC
    assert KEY.seed == RFC8032_SEED
    assert KEY.sign(b"") == RFC8032_SIGNATURE
    verify_signature(RFC8032_PUBLIC, b"", RFC8032_SIGNATURE)


def test_generated_keys_differ_and_sign() -> None:
    one, two = SigningKey.generate(), SigningKey.generate()
    assert one.public_key != two.public_key
    verify_signature(one.public_key, b"m", one.sign(b"m"))


@pytest.mark.parametrize(
    ("public_key", "message", "signature", "match"),
    [
        (RFC8032_PUBLIC, b"x", RFC8032_SIGNATURE, "does not verify"),
        (RFC8032_PUBLIC, b"", RFC8032_SIGNATURE[:63], "63 bytes"),
        (RFC8032_PUBLIC[:31], b"", RFC8032_SIGNATURE, "31 bytes"),
        (bytes(32), b"", RFC8032_SIGNATURE, "does not verify"),
        (RFC8032_PUBLIC, b"", bytes([RFC8032_SIGNATURE[0] ^ 1]) + RFC8032_SIGNATURE[1:], "verify"),
    ],
)
def test_invalid_signature_raises(
    public_key: bytes, message: bytes, signature: bytes, match: str
) -> None:
    with pytest.raises(InvalidSignature, match=match):
        verify_signature(public_key, message, signature)


def test_invalid_signature_is_a_securemsg_crypto_error() -> None:
    assert issubclass(InvalidSignature, CryptoError)
    assert issubclass(CryptoError, SecuremsgError)


def test_seed_of_wrong_length_refused() -> None:
    with pytest.raises(ValueError, match="31 bytes"):
        SigningKey.from_seed(bytes(31))
