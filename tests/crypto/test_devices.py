"""Identity and device keys; AIK-signed device certificates and device lists."""

from __future__ import annotations

import hashlib

import pytest

from securemsg.crypto.devices import (
    CERTIFICATE_PURPOSE,
    DEVICE_LIST_PURPOSE,
    certify_device,
    sign_device_list,
    verify_device_certificate,
    verify_device_list,
)
from securemsg.crypto.envelope import ENVELOPE_PURPOSE
from securemsg.crypto.errors import CryptoError, InvalidSignature
from securemsg.crypto.keys import DeviceKeys, IdentityKey, purpose_message, verify_for_purpose
from securemsg.protocol.devices import DeviceEntry, DeviceError, StaleDeviceList
from securemsg.protocol.errors import ErrorCode

ACCOUNT = bytes.fromhex("a11ce000000000000000000000000001")
OTHER_ACCOUNT = bytes.fromhex("b0b00000000000000000000000000001")
LAPTOP = bytes.fromhex("a11ce000000000000000000000000d01")
PHONE = bytes.fromhex("a11ce000000000000000000000000d02")
IDENTITY = IdentityKey.from_seed(b"\x01" * 32)
LAPTOP_KEYS = DeviceKeys.from_seed(b"\x02" * 32)
PHONE_KEYS = DeviceKeys.from_seed(b"\x03" * 32)
NOW_MS = 1_700_000_000_000
# Pinned once: any change to a layout, a purpose string or a key derivation changes these.
CERTIFICATE_SHA256 = "2e7be5e95adf2dd27e9e32c60437431f27260db2f9d946ebac6ae05ee6383a39"
DEVICE_LIST_SHA256 = "19e4a77706c92dbafc5499589104a2881e167b97ec6e8aa4ce24c9e363b783f1"


def certificate(identity: IdentityKey = IDENTITY) -> bytes:
    return certify_device(
        identity,
        account_id=ACCOUNT,
        device_id=LAPTOP,
        device=LAPTOP_KEYS.public_keys,
        created_ms=NOW_MS,
    )


def entries() -> list[DeviceEntry]:
    return [
        DeviceEntry(PHONE, PHONE_KEYS.signing_key, PHONE_KEYS.encryption_key),
        DeviceEntry(LAPTOP, LAPTOP_KEYS.signing_key, LAPTOP_KEYS.encryption_key),
    ]


def device_list(list_version: int = 1, identity: IdentityKey = IDENTITY) -> bytes:
    return sign_device_list(
        identity,
        account_id=ACCOUNT,
        list_version=list_version,
        devices=entries(),
        created_ms=NOW_MS,
    )


# -- keys ---------------------------------------------------------------------------------------


def test_keys_from_the_same_seed_are_the_same() -> None:
    assert IdentityKey.from_seed(b"\x01" * 32).public_key == IDENTITY.public_key
    again = DeviceKeys.from_seed(b"\x02" * 32)
    assert again.public_keys == LAPTOP_KEYS.public_keys
    assert again.encryption_secret == LAPTOP_KEYS.encryption_secret


def test_device_signing_and_encryption_keys_are_derived_separately() -> None:
    seed = b"\x02" * 32
    signing_seed = hashlib.blake2b(b"securemsg/v1/device-signing-seed", key=seed, digest_size=32)
    assert LAPTOP_KEYS.to_bytes()[1:33] == signing_seed.digest()
    assert LAPTOP_KEYS.to_bytes()[33:] != signing_seed.digest()


def test_generated_keys_differ() -> None:
    assert IdentityKey.generate().public_key != IdentityKey.generate().public_key
    first, second = DeviceKeys.generate(), DeviceKeys.generate()
    assert first.signing_key != second.signing_key
    assert first.encryption_key != second.encryption_key


def test_private_keys_round_trip_through_bytes() -> None:
    identity_bytes = IDENTITY.to_bytes()
    assert len(identity_bytes) == 33 and identity_bytes[0] == 1
    assert IdentityKey.from_bytes(identity_bytes).public_key == IDENTITY.public_key
    device_bytes = LAPTOP_KEYS.to_bytes()
    assert len(device_bytes) == 65 and device_bytes[0] == 1
    assert DeviceKeys.from_bytes(device_bytes).public_keys == LAPTOP_KEYS.public_keys


@pytest.mark.parametrize(
    ("load", "data"),
    [
        (IdentityKey.from_bytes, b"\x01" * 32),
        (IdentityKey.from_bytes, b"\x02" + b"\x00" * 32),
        (DeviceKeys.from_bytes, b"\x01" * 33),
        (DeviceKeys.from_bytes, b"\x09" + b"\x00" * 64),
    ],
)
def test_malformed_private_key_bytes_are_refused(load: object, data: bytes) -> None:
    with pytest.raises(CryptoError):
        load(data)  # type: ignore[operator]


def test_repr_never_shows_private_material() -> None:
    secrets = (IDENTITY.to_bytes()[1:].hex(), LAPTOP_KEYS.encryption_secret.hex())
    text = repr(IDENTITY) + repr(LAPTOP_KEYS)
    assert not any(secret in text for secret in secrets)


def test_signatures_are_bound_to_their_purpose() -> None:
    signature = LAPTOP_KEYS.sign(ENVELOPE_PURPOSE, b"message")
    verify_for_purpose(LAPTOP_KEYS.signing_key, ENVELOPE_PURPOSE, b"message", signature)
    with pytest.raises(InvalidSignature):
        verify_for_purpose(LAPTOP_KEYS.signing_key, DEVICE_LIST_PURPOSE, b"message", signature)
    assert purpose_message(b"p", b"m") == b"p\x00m"
    with pytest.raises(ValueError):
        purpose_message(b"p\x00q", b"m")


# -- certificates -------------------------------------------------------------------------------


def test_certificate_verifies_under_the_identity_key() -> None:
    verified = verify_device_certificate(certificate(), IDENTITY.public_key, account_id=ACCOUNT)
    assert (verified.account_id, verified.device_id) == (ACCOUNT, LAPTOP)
    assert verified.public_keys == LAPTOP_KEYS.public_keys
    assert verified.created_ms == NOW_MS


def test_certificate_bytes_match_the_pinned_vector() -> None:
    assert hashlib.sha256(certificate()).hexdigest() == CERTIFICATE_SHA256


def test_certificate_signed_by_another_identity_is_refused() -> None:
    forged = certificate(IdentityKey.from_seed(b"\x09" * 32))
    with pytest.raises(InvalidSignature, match="not signed by the account's identity key"):
        verify_device_certificate(forged, IDENTITY.public_key, account_id=ACCOUNT)


def test_certificate_for_another_account_is_refused() -> None:
    with pytest.raises(DeviceError) as caught:
        verify_device_certificate(certificate(), IDENTITY.public_key, account_id=OTHER_ACCOUNT)
    assert caught.value.code is ErrorCode.BAD_DEVICE


def test_any_flipped_certificate_byte_is_refused() -> None:
    raw = certificate()
    for at in range(len(raw)):
        tampered = bytearray(raw)
        tampered[at] ^= 0x01
        with pytest.raises((InvalidSignature, DeviceError)):
            verify_device_certificate(bytes(tampered), IDENTITY.public_key, account_id=ACCOUNT)


def test_a_device_list_signature_is_not_a_certificate_signature() -> None:
    # Same key, same bytes, other purpose: must not verify.
    raw = certificate()
    body = raw[:-64]
    relabelled = body + IDENTITY.sign(DEVICE_LIST_PURPOSE, body)
    with pytest.raises(InvalidSignature):
        verify_device_certificate(relabelled, IDENTITY.public_key, account_id=ACCOUNT)
    assert raw[-64:] == IDENTITY.sign(CERTIFICATE_PURPOSE, body)


# -- device lists --------------------------------------------------------------------------------


def test_device_list_verifies_and_lists_devices_in_id_order() -> None:
    verified = verify_device_list(
        device_list(), IDENTITY.public_key, account_id=ACCOUNT, min_version=0
    )
    assert verified.list_version == 1
    assert verified.device_ids == (LAPTOP, PHONE)
    assert verified.encryption_keys == {
        LAPTOP: LAPTOP_KEYS.encryption_key,
        PHONE: PHONE_KEYS.encryption_key,
    }


def test_device_list_signed_by_another_identity_is_refused() -> None:
    forged = device_list(identity=IdentityKey.from_seed(b"\x09" * 32))
    with pytest.raises(InvalidSignature, match="device list is not signed"):
        verify_device_list(forged, IDENTITY.public_key, account_id=ACCOUNT, min_version=0)


def test_device_list_for_another_account_is_refused() -> None:
    with pytest.raises(DeviceError, match="is for account"):
        verify_device_list(
            device_list(), IDENTITY.public_key, account_id=OTHER_ACCOUNT, min_version=0
        )


def test_any_flipped_device_list_byte_is_refused() -> None:
    raw = device_list(3)
    for at in range(len(raw)):
        tampered = bytearray(raw)
        tampered[at] ^= 0x01
        with pytest.raises((InvalidSignature, DeviceError)):
            verify_device_list(
                bytes(tampered), IDENTITY.public_key, account_id=ACCOUNT, min_version=2
            )


def test_newer_device_list_is_accepted() -> None:
    verified = verify_device_list(
        device_list(5), IDENTITY.public_key, account_id=ACCOUNT, min_version=4
    )
    assert verified.list_version == 5


def test_older_device_list_is_a_rollback() -> None:
    with pytest.raises(StaleDeviceList) as caught:
        verify_device_list(device_list(3), IDENTITY.public_key, account_id=ACCOUNT, min_version=4)
    assert caught.value.code is ErrorCode.STALE_DEVICE_LIST


def test_refetching_the_trusted_list_is_accepted() -> None:
    raw = device_list(4)
    verified = verify_device_list(
        raw, IDENTITY.public_key, account_id=ACCOUNT, min_version=4, current=raw
    )
    assert verified.raw == raw


def test_a_different_list_at_the_trusted_version_is_a_fork() -> None:
    trusted = device_list(4)
    fork = sign_device_list(
        IDENTITY, account_id=ACCOUNT, list_version=4, devices=entries()[:1], created_ms=NOW_MS
    )
    with pytest.raises(StaleDeviceList, match="differs from the trusted list"):
        verify_device_list(
            fork, IDENTITY.public_key, account_id=ACCOUNT, min_version=4, current=trusted
        )


def test_forged_list_is_reported_as_a_bad_signature_before_its_version() -> None:
    forged = device_list(1, identity=IdentityKey.from_seed(b"\x09" * 32))
    with pytest.raises(InvalidSignature):
        verify_device_list(forged, IDENTITY.public_key, account_id=ACCOUNT, min_version=4)


def test_device_list_bytes_match_the_pinned_vector() -> None:
    assert hashlib.sha256(device_list(7)).hexdigest() == DEVICE_LIST_SHA256
