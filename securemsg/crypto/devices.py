"""Sign and verify device certificates and device lists with an account's identity key (AIK).

A client wraps content keys only to devices on a device list it verified here, so a server that
invents a device or replays an old list is caught: a forged list fails the signature
(`InvalidSignature`), an old or forked one fails the version check (`StaleDeviceList`).
Malformed bytes raise `DeviceError` (BAD_DEVICE); the layouts live in `securemsg.protocol.devices`.
"""

from __future__ import annotations

from collections.abc import Iterable

from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.keys import IdentityKey, verify_for_purpose
from securemsg.protocol.devices import (
    DeviceCertificate,
    DeviceEntry,
    DeviceError,
    DeviceList,
    DeviceListLimits,
    DevicePublicKeys,
    check_not_rollback,
    encode_certificate_body,
    encode_device_list_body,
    parse_device_certificate,
    parse_device_list,
)

CERTIFICATE_PURPOSE = b"securemsg/v1/device-certificate"
DEVICE_LIST_PURPOSE = b"securemsg/v1/device-list"


def certify_device(
    identity: IdentityKey,
    *,
    account_id: bytes,
    device_id: bytes,
    device: DevicePublicKeys,
    created_ms: int,
) -> bytes:
    """Return a certificate, signed by the AIK, binding the device's public keys to the account."""
    body = encode_certificate_body(
        account_id=account_id, device_id=device_id, keys=device, created_ms=created_ms
    )
    return body + identity.sign(CERTIFICATE_PURPOSE, body)


def verify_device_certificate(
    raw: bytes, identity_public_key: bytes, *, account_id: bytes
) -> DeviceCertificate:
    """Return the certificate if the AIK signed it for `account_id`; raise otherwise.

    Raises `DeviceError` for malformed bytes or another account, `InvalidSignature` for a bad
    signature.
    """
    certificate = parse_device_certificate(raw)
    try:
        verify_for_purpose(
            identity_public_key,
            CERTIFICATE_PURPOSE,
            certificate.signed_part,
            certificate.signature,
        )
    except InvalidSignature as error:
        raise InvalidSignature(
            "device certificate is not signed by the account's identity key"
        ) from error
    _check_account(certificate.account_id, account_id, "device certificate")
    return certificate


def sign_device_list(
    identity: IdentityKey,
    *,
    account_id: bytes,
    list_version: int,
    devices: Iterable[DeviceEntry],
    created_ms: int,
    limits: DeviceListLimits | None = None,
) -> bytes:
    """Return the account's device list (entries sorted by device id), signed by the AIK.

    `list_version` starts at 1 and must grow with every change: clients refuse anything older
    than what they have seen.
    """
    body = encode_device_list_body(
        account_id=account_id,
        list_version=list_version,
        created_ms=created_ms,
        entries=devices,
        limits=limits,
    )
    return body + identity.sign(DEVICE_LIST_PURPOSE, body)


def verify_device_list(
    raw: bytes,
    identity_public_key: bytes,
    *,
    account_id: bytes,
    min_version: int,
    current: bytes | None = None,
    limits: DeviceListLimits | None = None,
) -> DeviceList:
    """Return the list if the AIK signed it for `account_id` and it is not a rollback.

    Accepted: `list_version > min_version`, or `list_version == min_version` with bytes identical
    to `current`, the list the caller already trusts at that version (a re-fetch). On first
    contact pass `min_version=0`. Raises `DeviceError` (malformed, other account),
    `InvalidSignature`, or `StaleDeviceList` (older, or a different list at the same version).
    """
    device_list = parse_device_list(raw, limits)
    try:
        verify_for_purpose(
            identity_public_key,
            DEVICE_LIST_PURPOSE,
            device_list.signed_part,
            device_list.signature,
        )
    except InvalidSignature as error:
        raise InvalidSignature("device list is not signed by the account's identity key") from error
    _check_account(device_list.account_id, account_id, "device list")
    check_not_rollback(device_list, min_version=min_version, current=current)
    return device_list


def _check_account(actual: bytes, expected: bytes, what: str) -> None:
    if actual != expected:
        raise DeviceError(f"{what} is for account {actual.hex()}, not {expected.hex()}")
