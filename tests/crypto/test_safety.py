"""Safety numbers: the same 60 digits on both phones, different for any other key."""

from __future__ import annotations

import hashlib

import pytest

from securemsg.crypto.errors import CryptoError
from securemsg.crypto.keys import IdentityKey
from securemsg.crypto.safety import (
    ITERATIONS,
    SafetyNumber,
    SafetyNumberMismatch,
    fingerprint,
    safety_number,
)

CLIENT = bytes.fromhex("c11e0000000000000000000000000001")
THERAPIST = bytes.fromhex("7e4a0000000000000000000000000001")
CLIENT_AIK = IdentityKey.from_seed(b"\x01" * 32).public_key
THERAPIST_AIK = IdentityKey.from_seed(b"\x02" * 32).public_key
# Pinned once: any change to the construction changes it.
PINNED_DIGITS = "152722750101973128387796013180410345159443748899847381171306"


def client_view() -> SafetyNumber:
    return safety_number(
        local_account=CLIENT,
        local_identity_key=CLIENT_AIK,
        remote_account=THERAPIST,
        remote_identity_key=THERAPIST_AIK,
    )


def therapist_view() -> SafetyNumber:
    return safety_number(
        local_account=THERAPIST,
        local_identity_key=THERAPIST_AIK,
        remote_account=CLIENT,
        remote_identity_key=CLIENT_AIK,
    )


def test_both_parties_see_the_same_safety_number() -> None:
    assert client_view() == therapist_view()


def test_safety_number_is_sixty_digits_in_twelve_groups_of_five() -> None:
    number = client_view()
    assert len(number.digits) == 60 and number.digits.isdigit()
    assert len(number.groups) == 12
    assert all(len(group) == 5 for group in number.groups)
    assert str(number) == " ".join(number.groups)


def test_safety_number_matches_the_pinned_vector() -> None:
    assert client_view().digits == PINNED_DIGITS


def test_qr_payload_is_a_version_byte_and_both_fingerprints_in_order() -> None:
    payload = client_view().qr_payload
    low, high = sorted((fingerprint(CLIENT, CLIENT_AIK), fingerprint(THERAPIST, THERAPIST_AIK)))
    assert payload == b"\x01" + low + high
    assert len(payload) == 65


def test_fingerprint_is_the_documented_iterated_sha512() -> None:
    digest = hashlib.sha512(
        b"securemsg/v1/safety-number\x00" + b"\x00\x01" + CLIENT_AIK + CLIENT
    ).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + CLIENT_AIK).digest()
    assert fingerprint(CLIENT, CLIENT_AIK) == digest[:32]


def test_a_substituted_identity_key_changes_the_safety_number() -> None:
    attacker_aik = IdentityKey.from_seed(b"\x09" * 32).public_key
    substituted = safety_number(
        local_account=CLIENT,
        local_identity_key=CLIENT_AIK,
        remote_account=THERAPIST,
        remote_identity_key=attacker_aik,
    )
    assert substituted.digits != client_view().digits
    assert substituted.qr_payload != client_view().qr_payload


def test_the_same_key_under_another_account_changes_the_fingerprint() -> None:
    assert fingerprint(CLIENT, CLIENT_AIK) != fingerprint(THERAPIST, CLIENT_AIK)


def test_scanning_the_peers_code_passes_when_it_matches() -> None:
    client_view().check_scanned(therapist_view().qr_payload)


def test_scanning_a_different_code_raises() -> None:
    other = safety_number(
        local_account=CLIENT,
        local_identity_key=CLIENT_AIK,
        remote_account=THERAPIST,
        remote_identity_key=IdentityKey.from_seed(b"\x09" * 32).public_key,
    )
    with pytest.raises(SafetyNumberMismatch, match="does not match ours") as caught:
        client_view().check_scanned(other.qr_payload)
    assert isinstance(caught.value, CryptoError)


@pytest.mark.parametrize("payload", [b"", b"\x02" + b"\x00" * 64, b"\x01" + b"\x00" * 10])
def test_scanning_a_malformed_code_raises(payload: bytes) -> None:
    with pytest.raises(SafetyNumberMismatch):
        client_view().check_scanned(payload)


def test_fingerprint_refuses_malformed_inputs() -> None:
    with pytest.raises(ValueError):
        fingerprint(b"short", CLIENT_AIK)
    with pytest.raises(ValueError):
        fingerprint(CLIENT, b"\x00" * 31)
