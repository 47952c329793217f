"""Seal and open envelopes (suite 1): the two doors to message encryption.

`seal_envelope` takes keys and plaintext and returns envelope bytes; it picks the content key, the
body nonce and every wrap's ephemeral key itself. `open_envelope` returns the plaintext or raises
`InvalidSignature` / `DecryptionFailed`, never a partial result. The byte layout lives in
`securemsg.protocol.envelope`; docs/envelope.md explains every check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.utils

from securemsg.crypto.errors import CryptoError, DecryptionFailed, InvalidSignature
from securemsg.crypto.keys import DeviceKeys, verify_for_purpose
from securemsg.protocol.envelope import (
    COMMITMENT_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    Envelope,
    EnvelopeLimits,
    Wrap,
    check_limits,
    encode_header,
    envelope_size,
    pad,
    parse_envelope,
    unpad,
)
from securemsg.protocol.errors import EnvelopeError

ENVELOPE_PURPOSE = b"securemsg/v1/envelope"
KEY_COMMITMENT_PURPOSE = b"securemsg/v1/key-commitment"
EPHEMERAL_SEED_BYTES = 32


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    envelope: Envelope
    plaintext: bytes


def seal_envelope(
    *,
    sender: DeviceKeys,
    sender_account: bytes,
    sender_device: bytes,
    conversation_id: bytes,
    message_id: bytes,
    timestamp_ms: int,
    recipients: Mapping[bytes, bytes],
    plaintext: bytes,
    limits: EnvelopeLimits | None = None,
) -> bytes:
    """Encrypt `plaintext` to every device in `recipients` (device_id -> X25519 public key).

    Include the sender's own other devices in `recipients` if they should read the message.
    Raise `EnvelopeError` (ENVELOPE_TOO_LARGE, TOO_MANY_RECIPIENTS) before any crypto if the
    server would refuse the result under `limits`, `CryptoError` for a recipient key that is
    not a usable X25519 point, and `ValueError` for a field of the wrong shape.
    """
    return _seal_with(
        sender=sender,
        sender_account=sender_account,
        sender_device=sender_device,
        conversation_id=conversation_id,
        message_id=message_id,
        timestamp_ms=timestamp_ms,
        recipients=recipients,
        plaintext=plaintext,
        limits=limits,
        content_key=nacl.utils.random(KEY_BYTES),
        body_nonce=nacl.utils.random(NONCE_BYTES),
        ephemeral_seeds=[nacl.utils.random(EPHEMERAL_SEED_BYTES) for _ in recipients],
    )


def open_envelope(
    raw: bytes,
    *,
    recipient_device_id: bytes,
    recipient: DeviceKeys,
    sender_signing_key: bytes,
    limits: EnvelopeLimits | None = None,
) -> OpenedEnvelope:
    """Check and decrypt an envelope addressed to `recipient_device_id`.

    `sender_signing_key` is the Ed25519 key of `envelope.sender_device` from the sender's
    verified device list; the caller must also check that device belongs to
    `envelope.sender_account` and that the sender may write to the conversation.

    Order: parse, signature, own wrap, content key, key commitment, body, padding. A failed
    signature raises `InvalidSignature`; every other failure, including malformed bytes,
    raises `DecryptionFailed` with the reason.
    """
    try:
        envelope = parse_envelope(raw, limits or EnvelopeLimits())
    except EnvelopeError as error:
        raise DecryptionFailed(f"envelope is malformed: {error.message}") from error
    verify_envelope_signature(envelope, sender_signing_key)

    wrap = envelope.wrap_for(recipient_device_id)
    if wrap is None:
        raise DecryptionFailed(f"envelope has no wrap for device {recipient_device_id.hex()}")
    try:
        content_key = nacl.bindings.crypto_box_seal_open(
            wrap.wrapped_key, recipient.encryption_key, recipient.encryption_secret
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("content key wrap does not open with this device's key") from error
    expected = _commitment(content_key, envelope.conversation_id, envelope.message_id)
    if not hmac.compare_digest(expected, envelope.key_commitment):
        raise DecryptionFailed("content key does not match the envelope's key commitment")
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            envelope.body_ciphertext, envelope.header, envelope.body_nonce, content_key
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("body does not authenticate under the content key") from error
    try:
        plaintext = unpad(padded)
    except EnvelopeError as error:
        raise DecryptionFailed(f"plaintext padding is malformed: {error.message}") from error
    return OpenedEnvelope(envelope, plaintext)


def verify_envelope_signature(envelope: Envelope, signing_key: bytes) -> None:
    """Check the sender device's signature; raise `InvalidSignature` unless it is valid.

    The server checks (after `parse_envelope`) with the registered key of the authenticated
    device; it needs no other key.
    """
    (verifies,) = check_envelope_signatures(
        [(signing_key, envelope.signed_part, envelope.signature)]
    )
    if not verifies:
        raise InvalidSignature("envelope signature does not verify against the sender device key")


def check_envelope_signatures(items: Iterable[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Whether each (signing key, signed part, signature) verifies: the server's envelope
    signature check. Plain bytes in and out: it also runs in worker processes
    (server/signatures.py). Whatever stops a check from passing makes that one False."""
    verdicts = []
    for signing_key, signed_part, signature in items:
        try:
            verify_for_purpose(signing_key, ENVELOPE_PURPOSE, signed_part, signature)
        except Exception:  # noqa: BLE001 - fail closed: not shown valid is not valid
            verdicts.append(False)
        else:
            verdicts.append(True)
    return verdicts


def _seal_with(
    *,
    sender: DeviceKeys,
    sender_account: bytes,
    sender_device: bytes,
    conversation_id: bytes,
    message_id: bytes,
    timestamp_ms: int,
    recipients: Mapping[bytes, bytes],
    plaintext: bytes,
    limits: EnvelopeLimits | None,
    content_key: bytes,
    body_nonce: bytes,
    ephemeral_seeds: Sequence[bytes],
) -> bytes:
    """`seal_envelope` with its randomness passed in: for fixed test vectors only.

    `ephemeral_seeds[i]` is used for the i-th recipient in ascending device id order.
    """
    if len(content_key) != KEY_BYTES or len(body_nonce) != NONCE_BYTES:
        raise ValueError("content key must be 32 bytes and body nonce 24 bytes")
    if len(ephemeral_seeds) != len(recipients):
        raise ValueError(f"{len(recipients)} recipients need as many ephemeral seeds")
    padded = pad(plaintext)
    check_limits(
        size=envelope_size(len(recipients), len(padded)),
        recipient_count=len(recipients),
        limits=limits or EnvelopeLimits(),
    )
    ordered = sorted(recipients.items())
    wraps = [
        Wrap(device_id, _wrap_key(content_key, public_key, seed, device_id))
        for (device_id, public_key), seed in zip(ordered, ephemeral_seeds, strict=True)
    ]
    header = encode_header(
        conversation_id=conversation_id,
        message_id=message_id,
        sender_account=sender_account,
        sender_device=sender_device,
        timestamp_ms=timestamp_ms,
        wraps=wraps,
        key_commitment=_commitment(content_key, conversation_id, message_id),
        body_len=NONCE_BYTES + len(padded) + TAG_BYTES,
    )
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, header, body_nonce, content_key
    )
    signed_part = b"".join((header, body_nonce, ciphertext))
    return signed_part + sender.sign(ENVELOPE_PURPOSE, signed_part)


def _commitment(content_key: bytes, conversation_id: bytes, message_id: bytes) -> bytes:
    """BLAKE2b-256 keyed with the content key: binds every recipient to one key (and plaintext)."""
    return hashlib.blake2b(
        b"".join((KEY_COMMITMENT_PURPOSE, b"\x00", conversation_id, message_id)),
        key=content_key,
        digest_size=COMMITMENT_BYTES,
    ).digest()


def _wrap_key(content_key: bytes, public_key: bytes, seed: bytes, device_id: bytes) -> bytes:
    """libsodium's crypto_box_seal, with the ephemeral key pair derived from `seed`.

    sealed = epk || crypto_box(key, nonce=BLAKE2b-192(epk || pk), pk, esk); it opens with
    crypto_box_seal_open. Building it here lets test vectors fix the ephemeral key.
    """
    if len(public_key) != KEY_BYTES:
        raise ValueError(f"encryption key of device {device_id.hex()} is not 32 bytes")
    if len(seed) != EPHEMERAL_SEED_BYTES:
        raise ValueError("ephemeral seeds must be 32 bytes")
    ephemeral_public, ephemeral_secret = nacl.bindings.crypto_box_seed_keypair(seed)
    nonce = hashlib.blake2b(ephemeral_public + public_key, digest_size=24).digest()
    try:
        boxed = nacl.bindings.crypto_box(content_key, nonce, public_key, ephemeral_secret)
    except nacl.exceptions.CryptoError as error:
        # libsodium refuses low-order points (an all-zero shared secret).
        raise CryptoError(f"encryption key of device {device_id.hex()} is not usable") from error
    return ephemeral_public + boxed
