"""Safety numbers: what two people compare out of band to know they see each other's real AIKs.

Each account's fingerprint is an iterated SHA-512 over its identity key and account id (Signal's
construction, with our purpose string); the safety number is both fingerprints in a fixed order,
so both parties compute the same 60 digits and the same QR payload.

    fingerprint = SHA-512^5200(purpose || 0x00 || version u16 || identity_key || account_id)[:32]
                  where each round is h = SHA-512(h || identity_key)
    digits      = for the lower fingerprint, then the higher: 6 groups of 5 digits, each
                  int(bytes[5i : 5i+5]) mod 100000, from the first 30 bytes
    QR payload  = version 0x01 || lower fingerprint (32) || higher fingerprint (32)
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from securemsg.crypto.errors import CryptoError

SAFETY_NUMBER_PURPOSE = b"securemsg/v1/safety-number"
FORMAT_VERSION = 1
ITERATIONS = 5200
FINGERPRINT_BYTES = 32
ID_BYTES = 16
KEY_BYTES = 32


class SafetyNumberMismatch(CryptoError):
    """A scanned safety number differs from ours: someone sees a different identity key."""


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    digits: str  # 60 decimal digits
    qr_payload: bytes

    @property
    def groups(self) -> tuple[str, ...]:
        """Twelve groups of five digits, as shown to people."""
        return tuple(self.digits[i : i + 5] for i in range(0, len(self.digits), 5))

    def __str__(self) -> str:
        return " ".join(self.groups)

    def check_scanned(self, payload: bytes) -> None:
        """Raise `SafetyNumberMismatch` unless `payload` (the peer's QR code) equals ours."""
        if payload[:1] != self.qr_payload[:1]:
            raise SafetyNumberMismatch("scanned safety number has an unsupported format version")
        if not hmac.compare_digest(payload, self.qr_payload):
            raise SafetyNumberMismatch("scanned safety number does not match ours")


def fingerprint(account_id: bytes, identity_key: bytes) -> bytes:
    """The 32-byte fingerprint of one account's identity key."""
    if len(account_id) != ID_BYTES or len(identity_key) != KEY_BYTES:
        raise ValueError("account_id must be 16 bytes and identity_key 32 bytes")
    digest = hashlib.sha512(
        b"".join(
            (
                SAFETY_NUMBER_PURPOSE,
                b"\x00",
                FORMAT_VERSION.to_bytes(2, "big"),
                identity_key,
                account_id,
            )
        )
    ).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + identity_key).digest()
    return digest[:FINGERPRINT_BYTES]


def safety_number(
    *,
    local_account: bytes,
    local_identity_key: bytes,
    remote_account: bytes,
    remote_identity_key: bytes,
) -> SafetyNumber:
    """The safety number of two accounts; swapping local and remote gives the same result."""
    low, high = sorted(
        (
            fingerprint(local_account, local_identity_key),
            fingerprint(remote_account, remote_identity_key),
        )
    )
    return SafetyNumber(
        digits=_digits(low) + _digits(high),
        qr_payload=bytes((FORMAT_VERSION,)) + low + high,
    )


def _digits(fingerprint_bytes: bytes) -> str:
    return "".join(
        f"{int.from_bytes(fingerprint_bytes[i : i + 5], 'big') % 100000:05d}"
        for i in range(0, 30, 5)
    )
