"""Sign and verify supervisor grants, client consents and key shares; open shared history.

The therapist's device signs a grant naming the supervisor, the conversation and the time window;
only a grant that verifies against the therapist's device key (from a verified device list)
makes a supervisor a reader. History reaches a supervisor only through key shares: the
therapist's device re-wraps a stored message's content key to a supervisor device and signs that.
The supervisor still checks the original sender's signature on every envelope it opens.
"""

from __future__ import annotations

import hmac

import nacl.bindings
import nacl.exceptions

from securemsg.crypto.envelope import ENVELOPE_PURPOSE, OpenedEnvelope, _commitment, _wrap_key
from securemsg.crypto.errors import DecryptionFailed, InvalidSignature
from securemsg.crypto.keys import DeviceKeys, verify_for_purpose
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope, unpad
from securemsg.protocol.errors import EnvelopeError
from securemsg.protocol.grants import (
    Consent,
    Grant,
    KeyShare,
    encode_consent_body,
    encode_grant_body,
    encode_key_share_body,
    parse_consent,
    parse_grant,
    parse_key_share,
)

GRANT_PURPOSE = b"securemsg/v1/grant"
CONSENT_PURPOSE = b"securemsg/v1/grant-consent"
KEY_SHARE_PURPOSE = b"securemsg/v1/key-share"


def sign_grant(
    therapist: DeviceKeys,
    *,
    grant_id: bytes,
    conversation_id: bytes,
    therapist_account: bytes,
    therapist_device: bytes,
    supervisor_account: bytes,
    from_ms: int,
    until_ms: int,
    include_history: bool,
) -> bytes:
    body = encode_grant_body(
        grant_id=grant_id,
        conversation_id=conversation_id,
        therapist_account=therapist_account,
        therapist_device=therapist_device,
        supervisor_account=supervisor_account,
        from_ms=from_ms,
        until_ms=until_ms,
        include_history=include_history,
    )
    return body + therapist.sign(GRANT_PURPOSE, body)


def verify_grant(raw: bytes, therapist_device_signing_key: bytes) -> Grant:
    """The grant, if the named therapist device signed it; raises GrantError or InvalidSignature."""
    grant = parse_grant(raw)
    try:
        verify_for_purpose(
            therapist_device_signing_key, GRANT_PURPOSE, grant.signed_part, grant.signature
        )
    except InvalidSignature as error:
        raise InvalidSignature("grant is not signed by the therapist's device") from error
    return grant


def sign_consent(
    client: DeviceKeys, *, grant_raw: bytes, client_account: bytes, client_device: bytes
) -> bytes:
    grant = parse_grant(grant_raw)
    body = encode_consent_body(client_account=client_account, client_device=client_device)
    return body + client.sign(CONSENT_PURPOSE, grant.signed_part + body)


def verify_consent(raw: bytes, grant: Grant, client_device_signing_key: bytes) -> Consent:
    consent = parse_consent(raw)
    signed = grant.signed_part + consent.raw[: len(consent.raw) - len(consent.signature)]
    try:
        verify_for_purpose(client_device_signing_key, CONSENT_PURPOSE, signed, consent.signature)
    except InvalidSignature as error:
        raise InvalidSignature("consent is not signed by the client's device") from error
    return consent


def content_key_of(raw_envelope: bytes, *, device_id: bytes, device: DeviceKeys) -> bytes:
    """The content key of an envelope this device can open (to share it with a supervisor)."""
    try:
        envelope = parse_envelope(
            raw_envelope, EnvelopeLimits(max_envelope_bytes=len(raw_envelope))
        )
    except EnvelopeError as error:
        raise DecryptionFailed(f"envelope is malformed: {error.message}") from error
    wrap = envelope.wrap_for(device_id)
    if wrap is None:
        raise DecryptionFailed("envelope has no wrap for this device")
    try:
        key = nacl.bindings.crypto_box_seal_open(
            wrap.wrapped_key, device.encryption_key, device.encryption_secret
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("content key wrap does not open with this device's key") from error
    if not hmac.compare_digest(
        _commitment(key, envelope.conversation_id, envelope.message_id), envelope.key_commitment
    ):
        raise DecryptionFailed("content key does not match the envelope's key commitment")
    return bytes(key)


def make_key_share(
    therapist: DeviceKeys,
    *,
    grant_id: bytes,
    therapist_device: bytes,
    message_id: bytes,
    content_key: bytes,
    supervisor_device: bytes,
    supervisor_encryption_key: bytes,
) -> bytes:
    seed = nacl.bindings.randombytes(32)
    wrapped = _wrap_key(content_key, supervisor_encryption_key, seed, supervisor_device)
    body = encode_key_share_body(
        grant_id=grant_id,
        therapist_device=therapist_device,
        message_id=message_id,
        supervisor_device=supervisor_device,
        wrapped_key=wrapped,
    )
    return body + therapist.sign(KEY_SHARE_PURPOSE, body)


def verify_key_share(raw: bytes, therapist_device_signing_key: bytes) -> KeyShare:
    share = parse_key_share(raw)
    try:
        verify_for_purpose(
            therapist_device_signing_key, KEY_SHARE_PURPOSE, share.signed_part, share.signature
        )
    except InvalidSignature as error:
        raise InvalidSignature("key share is not signed by the therapist's device") from error
    return share


def open_shared(
    raw_envelope: bytes,
    share: KeyShare,
    *,
    supervisor: DeviceKeys,
    sender_signing_key: bytes,
) -> OpenedEnvelope:
    """Open a history envelope with a verified key share; checks the original signature."""
    try:
        envelope = parse_envelope(
            raw_envelope, EnvelopeLimits(max_envelope_bytes=len(raw_envelope))
        )
    except EnvelopeError as error:
        raise DecryptionFailed(f"envelope is malformed: {error.message}") from error
    try:
        verify_for_purpose(
            sender_signing_key, ENVELOPE_PURPOSE, envelope.signed_part, envelope.signature
        )
    except InvalidSignature as error:
        raise InvalidSignature(
            "envelope signature does not verify against the sender device key"
        ) from error
    if share.message_id != envelope.message_id:
        raise DecryptionFailed("key share is for another message")
    try:
        key = nacl.bindings.crypto_box_seal_open(
            share.wrapped_key, supervisor.encryption_key, supervisor.encryption_secret
        )
    except nacl.exceptions.CryptoError as error:
        raise DecryptionFailed("key share does not open with this device's key") from error
    if not hmac.compare_digest(
        _commitment(key, envelope.conversation_id, envelope.message_id), envelope.key_commitment
    ):
        raise DecryptionFailed("shared key does not match the envelope's key commitment")
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            envelope.body_ciphertext, envelope.header, envelope.body_nonce, key
        )
        return OpenedEnvelope(envelope, unpad(padded))
    except (nacl.exceptions.CryptoError, EnvelopeError) as error:
        raise DecryptionFailed("body does not open under the shared key") from error
