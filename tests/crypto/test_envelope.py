"""Sealing and opening envelopes: round trips, every tamper, fixed vectors.

Regenerate tests/crypto/vectors/envelope-v1.json only on a deliberate format change:
    python -m tests.crypto.test_envelope
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.public
import pytest

from securemsg.crypto import envelope as envelope_module
from securemsg.crypto.devices import CERTIFICATE_PURPOSE, DEVICE_LIST_PURPOSE
from securemsg.crypto.envelope import (
    ENVELOPE_PURPOSE,
    KEY_COMMITMENT_PURPOSE,
    _seal_with,
    _wrap_key,
    open_envelope,
    seal_envelope,
    verify_envelope_signature,
)
from securemsg.crypto.errors import CryptoError, DecryptionFailed, InvalidSignature
from securemsg.crypto.keys import DeviceKeys
from securemsg.crypto.safety import SAFETY_NUMBER_PURPOSE
from securemsg.protocol.envelope import (
    EnvelopeLimits,
    Wrap,
    encode_header,
    envelope_size,
    pad,
    parse_envelope,
)
from securemsg.protocol.errors import EnvelopeError, ErrorCode

VECTORS = Path(__file__).parent / "vectors" / "envelope-v1.json"
LIMITS = EnvelopeLimits()

ALICE_ACCOUNT = bytes.fromhex("a11ce000000000000000000000000001")
ALICE_LAPTOP = bytes.fromhex("a11ce000000000000000000000000d01")
ALICE_PHONE = bytes.fromhex("a11ce000000000000000000000000d02")
BOB_PHONE = bytes.fromhex("b0b00000000000000000000000000d01")
CAROL_PHONE = bytes.fromhex("ca701000000000000000000000000d01")
CONVERSATION = bytes.fromhex("c0000000000000000000000000000001")
MESSAGE = bytes.fromhex("3e55a9e0000000000000000000000001")

KEYS = {
    ALICE_LAPTOP: DeviceKeys.from_seed(b"alice-laptop".ljust(32, b"\x00")),
    ALICE_PHONE: DeviceKeys.from_seed(b"alice-phone".ljust(32, b"\x00")),
    BOB_PHONE: DeviceKeys.from_seed(b"bob-phone".ljust(32, b"\x00")),
    CAROL_PHONE: DeviceKeys.from_seed(b"carol-phone".ljust(32, b"\x00")),
}
SENDER = KEYS[ALICE_LAPTOP]


def seal(
    plaintext: bytes = b"how are you feeling this week?",
    recipients: tuple[bytes, ...] = (BOB_PHONE, ALICE_PHONE),
    **overrides: Any,
) -> bytes:
    fields: dict[str, Any] = {
        "sender": SENDER,
        "sender_account": ALICE_ACCOUNT,
        "sender_device": ALICE_LAPTOP,
        "conversation_id": CONVERSATION,
        "message_id": MESSAGE,
        "timestamp_ms": 1_700_000_000_000,
        "recipients": {device: KEYS[device].encryption_key for device in recipients},
        "plaintext": plaintext,
    }
    fields.update(overrides)
    return seal_envelope(**fields)


def open_as(raw: bytes, device: bytes, *, sender_key: bytes | None = None) -> bytes:
    opened = open_envelope(
        raw,
        recipient_device_id=device,
        recipient=KEYS[device],
        sender_signing_key=SENDER.signing_key if sender_key is None else sender_key,
        limits=LIMITS,
    )
    return opened.plaintext


def resign(signed_part: bytes) -> bytes:
    """What a malicious sender can do: sign any bytes it likes with its own device key."""
    return signed_part + SENDER.sign(ENVELOPE_PURPOSE, signed_part)


# -- round trips -------------------------------------------------------------------------------


def test_every_recipient_opens_the_same_plaintext() -> None:
    raw = seal()
    assert open_as(raw, BOB_PHONE) == b"how are you feeling this week?"
    assert open_as(raw, ALICE_PHONE) == b"how are you feeling this week?"


def test_opened_envelope_carries_the_parsed_header() -> None:
    opened = open_envelope(
        seal(),
        recipient_device_id=BOB_PHONE,
        recipient=KEYS[BOB_PHONE],
        sender_signing_key=SENDER.signing_key,
    )
    envelope = opened.envelope
    assert (envelope.sender_account, envelope.sender_device) == (ALICE_ACCOUNT, ALICE_LAPTOP)
    assert (envelope.conversation_id, envelope.message_id) == (CONVERSATION, MESSAGE)
    assert envelope.timestamp_ms == 1_700_000_000_000
    assert envelope.recipient_devices == tuple(sorted((BOB_PHONE, ALICE_PHONE)))


@pytest.mark.parametrize("size", [0, 1, 251, 252, 253, 1000, 60_000])
def test_plaintexts_of_any_size_round_trip_and_are_padded(size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    raw = seal(plaintext, recipients=(BOB_PHONE,))
    assert open_as(raw, BOB_PHONE) == plaintext
    body = parse_envelope(raw, LIMITS).body
    assert len(body) - 40 >= max(256, size + 4)


def test_sealing_twice_uses_fresh_keys_and_nonces() -> None:
    first, second = parse_envelope(seal(), LIMITS), parse_envelope(seal(), LIMITS)
    assert first.key_commitment != second.key_commitment
    assert first.body_nonce != second.body_nonce
    assert {w.wrapped_key for w in first.wraps}.isdisjoint(w.wrapped_key for w in second.wraps)


def test_wraps_are_standard_sealed_boxes_of_the_content_key() -> None:
    envelope = parse_envelope(seal(recipients=(BOB_PHONE,)), LIMITS)
    bob = nacl.public.PrivateKey(KEYS[BOB_PHONE].encryption_secret)
    assert len(nacl.public.SealedBox(bob).decrypt(envelope.wraps[0].wrapped_key)) == 32


def test_server_checks_the_signature_without_any_decryption_key() -> None:
    envelope = parse_envelope(seal(), LIMITS)
    verify_envelope_signature(envelope, SENDER.signing_key)
    with pytest.raises(InvalidSignature):
        verify_envelope_signature(envelope, KEYS[CAROL_PHONE].signing_key)


# -- sealing refuses what the server would refuse ------------------------------------------------


def test_sealing_too_many_recipients_is_refused() -> None:
    with pytest.raises(EnvelopeError) as caught:
        seal(
            recipients=(BOB_PHONE, ALICE_PHONE, CAROL_PHONE),
            limits=EnvelopeLimits(max_recipients=2),
        )
    assert caught.value.code is ErrorCode.TOO_MANY_RECIPIENTS


def test_sealing_without_recipients_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="no recipients"):
        seal(recipients=())


def test_sealing_a_plaintext_too_large_for_the_limit_is_refused() -> None:
    with pytest.raises(EnvelopeError) as caught:
        seal(b"x" * 65_000)
    assert caught.value.code is ErrorCode.ENVELOPE_TOO_LARGE


def test_sealing_to_a_low_order_encryption_key_is_refused() -> None:
    with pytest.raises(CryptoError, match="is not usable"):
        seal_envelope(
            sender=SENDER,
            sender_account=ALICE_ACCOUNT,
            sender_device=ALICE_LAPTOP,
            conversation_id=CONVERSATION,
            message_id=MESSAGE,
            timestamp_ms=0,
            recipients={BOB_PHONE: bytes(32)},
            plaintext=b"hi",
        )


def test_sealing_with_a_malformed_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="conversation_id"):
        seal(conversation_id=b"short")


def test_fixed_randomness_of_the_wrong_shape_is_refused() -> None:
    fields: dict[str, Any] = {
        "sender": SENDER,
        "sender_account": ALICE_ACCOUNT,
        "sender_device": ALICE_LAPTOP,
        "conversation_id": CONVERSATION,
        "message_id": MESSAGE,
        "timestamp_ms": 0,
        "recipients": {BOB_PHONE: KEYS[BOB_PHONE].encryption_key},
        "plaintext": b"hi",
        "limits": LIMITS,
    }
    with pytest.raises(ValueError, match="content key"):
        _seal_with(
            **fields, content_key=b"", body_nonce=b"\x00" * 24, ephemeral_seeds=[b"\x00" * 32]
        )
    with pytest.raises(ValueError, match="ephemeral seeds"):
        _seal_with(**fields, content_key=b"\x00" * 32, body_nonce=b"\x00" * 24, ephemeral_seeds=[])


def test_every_purpose_string_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "envelope.md").read_text()
    for purpose in (ENVELOPE_PURPOSE, KEY_COMMITMENT_PURPOSE, CERTIFICATE_PURPOSE,
                    DEVICE_LIST_PURPOSE, SAFETY_NUMBER_PURPOSE):  # fmt: skip
        assert f"`{purpose.decode()}`" in docs


# -- opening refuses everything else -----------------------------------------------------------


def test_device_without_a_wrap_cannot_open() -> None:
    with pytest.raises(DecryptionFailed, match=f"no wrap for device {CAROL_PHONE.hex()}"):
        open_as(seal(), CAROL_PHONE)


def test_wrong_device_key_for_a_listed_device_cannot_open() -> None:
    with pytest.raises(DecryptionFailed, match="wrap does not open"):
        open_envelope(
            seal(),
            recipient_device_id=BOB_PHONE,
            recipient=KEYS[CAROL_PHONE],
            sender_signing_key=SENDER.signing_key,
        )


def test_wrong_sender_key_is_an_invalid_signature() -> None:
    with pytest.raises(InvalidSignature):
        open_as(seal(), BOB_PHONE, sender_key=KEYS[CAROL_PHONE].signing_key)


def test_malformed_bytes_fail_to_open_with_the_parser_reason() -> None:
    with pytest.raises(
        DecryptionFailed, match="envelope is malformed: envelope is empty"
    ) as caught:
        open_as(b"", BOB_PHONE)
    assert isinstance(caught.value.__cause__, EnvelopeError)


def test_flipping_any_byte_makes_opening_fail() -> None:
    raw = seal(recipients=(BOB_PHONE,))
    for at in range(len(raw)):
        for mask in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[at] ^= mask
            try:
                parse_envelope(bytes(tampered), LIMITS)
            except EnvelopeError:
                expected: type[Exception] = DecryptionFailed
            else:
                expected = InvalidSignature
            with pytest.raises(expected):
                open_as(bytes(tampered), BOB_PHONE)


def test_a_different_key_wrapped_to_one_recipient_fails_the_commitment() -> None:
    # A malicious sender gives Bob another content key than everyone else, re-encrypts the body
    # for the new header and re-signs: the key commitment, which every recipient checks, exposes it.
    content_key = b"\x03" * 32
    honest = parse_envelope(
        _seal_with(
            sender=SENDER,
            sender_account=ALICE_ACCOUNT,
            sender_device=ALICE_LAPTOP,
            conversation_id=CONVERSATION,
            message_id=MESSAGE,
            timestamp_ms=0,
            recipients={d: KEYS[d].encryption_key for d in (ALICE_PHONE, BOB_PHONE)},
            plaintext=b"the same for everyone?",
            limits=LIMITS,
            content_key=content_key,
            body_nonce=b"\x04" * 24,
            ephemeral_seeds=[b"\x05" * 32, b"\x06" * 32],
        ),
        LIMITS,
    )
    bob_key = KEYS[BOB_PHONE].encryption_key
    other_wrap = Wrap(BOB_PHONE, _wrap_key(b"\x42" * 32, bob_key, b"\x07" * 32, BOB_PHONE))
    header = encode_header(
        conversation_id=CONVERSATION,
        message_id=MESSAGE,
        sender_account=ALICE_ACCOUNT,
        sender_device=ALICE_LAPTOP,
        timestamp_ms=0,
        wraps=[other_wrap if w.device_id == BOB_PHONE else w for w in honest.wraps],
        key_commitment=honest.key_commitment,
        body_len=len(honest.body),
    )
    body = honest.body_nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        pad(b"the same for everyone?"), header, honest.body_nonce, content_key
    )
    forged = resign(header + body)
    assert open_as(forged, ALICE_PHONE) == b"the same for everyone?"
    with pytest.raises(DecryptionFailed, match="key commitment"):
        open_as(forged, BOB_PHONE)


def test_header_is_bound_to_the_body_even_under_a_fresh_signature() -> None:
    raw = seal()
    envelope = parse_envelope(raw, LIMITS)
    header = bytearray(envelope.header)
    header[66:74] = (1).to_bytes(8, "big")  # another timestamp
    forged = resign(bytes(header) + envelope.body)
    with pytest.raises(DecryptionFailed, match="body does not authenticate"):
        open_as(forged, BOB_PHONE)


def test_malformed_padding_under_a_valid_body_fails_to_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(envelope_module, "pad", lambda plaintext: b"\xff" * 256)
    raw = seal()
    with pytest.raises(DecryptionFailed, match="plaintext padding is malformed"):
        open_as(raw, BOB_PHONE)


# -- fixed vectors ------------------------------------------------------------------------------


def vector_inputs() -> list[dict[str, Any]]:
    return [
        {
            "name": "one recipient, short text",
            "sender_seed": "01" * 32,
            "sender_account": ALICE_ACCOUNT.hex(),
            "sender_device": ALICE_LAPTOP.hex(),
            "conversation_id": CONVERSATION.hex(),
            "message_id": MESSAGE.hex(),
            "timestamp_ms": 1_700_000_000_000,
            "recipients": [{"device_id": BOB_PHONE.hex(), "seed": "02" * 32}],
            "plaintext": b"hello, therapist".hex(),
            "content_key": "03" * 32,
            "body_nonce": "04" * 24,
            "ephemeral_seeds": ["05" * 32],
        },
        {
            "name": "three recipients, 300-byte text (second Padme bucket)",
            "sender_seed": "11" * 32,
            "sender_account": ALICE_ACCOUNT.hex(),
            "sender_device": ALICE_LAPTOP.hex(),
            "conversation_id": CONVERSATION.hex(),
            "message_id": "3e55a9e0000000000000000000000002",
            "timestamp_ms": 1_700_000_123_456,
            "recipients": [
                {"device_id": CAROL_PHONE.hex(), "seed": "12" * 32},
                {"device_id": BOB_PHONE.hex(), "seed": "13" * 32},
                {"device_id": ALICE_PHONE.hex(), "seed": "14" * 32},
            ],
            "plaintext": (bytes(range(256)) + bytes(44)).hex(),
            "content_key": "15" * 32,
            "body_nonce": "16" * 24,
            "ephemeral_seeds": ["17" * 32, "18" * 32, "19" * 32],
        },
    ]


def seal_vector(vector: dict[str, Any]) -> bytes:
    recipients = {
        bytes.fromhex(r["device_id"]): DeviceKeys.from_seed(bytes.fromhex(r["seed"])).encryption_key
        for r in vector["recipients"]
    }
    return _seal_with(
        sender=DeviceKeys.from_seed(bytes.fromhex(vector["sender_seed"])),
        sender_account=bytes.fromhex(vector["sender_account"]),
        sender_device=bytes.fromhex(vector["sender_device"]),
        conversation_id=bytes.fromhex(vector["conversation_id"]),
        message_id=bytes.fromhex(vector["message_id"]),
        timestamp_ms=vector["timestamp_ms"],
        recipients=recipients,
        plaintext=bytes.fromhex(vector["plaintext"]),
        limits=LIMITS,
        content_key=bytes.fromhex(vector["content_key"]),
        body_nonce=bytes.fromhex(vector["body_nonce"]),
        ephemeral_seeds=[bytes.fromhex(seed) for seed in vector["ephemeral_seeds"]],
    )


def generate_vectors() -> dict[str, Any]:
    vectors = []
    for vector in vector_inputs():
        sender = DeviceKeys.from_seed(bytes.fromhex(vector["sender_seed"]))
        vector["sender_ed25519_seed"] = sender.to_bytes()[1:33].hex()
        vector["sender_signing_key"] = sender.signing_key.hex()
        for recipient in vector["recipients"]:
            keys = DeviceKeys.from_seed(bytes.fromhex(recipient["seed"]))
            recipient["x25519_secret"] = keys.encryption_secret.hex()
            recipient["x25519_public"] = keys.encryption_key.hex()
        vector["envelope"] = seal_vector(vector).hex()
        vectors.append(vector)
    return {
        "description": (
            "securemsg envelope v1, suite 1. Device keys come from DeviceKeys.from_seed(seed);"
            " ephemeral_seeds[i] (crypto_box_seed_keypair) seals the content key to the i-th"
            " recipient in ascending device id order. See docs/envelope.md."
        ),
        "vectors": vectors,
    }


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("index", range(len(vector_inputs())))
def test_sealing_the_fixed_vector_inputs_reproduces_the_stored_bytes(index: int) -> None:
    vector = load_vectors()[index]
    assert seal_vector(vector).hex() == vector["envelope"]


@pytest.mark.parametrize("index", range(len(vector_inputs())))
def test_every_recipient_of_a_fixed_vector_opens_it(index: int) -> None:
    vector = load_vectors()[index]
    raw = bytes.fromhex(vector["envelope"])
    assert len(raw) == envelope_size(
        len(vector["recipients"]), len(parse_envelope(raw, LIMITS).body) - 40
    )
    for recipient in vector["recipients"]:
        keys = DeviceKeys.from_seed(bytes.fromhex(recipient["seed"]))
        assert keys.encryption_secret.hex() == recipient["x25519_secret"]
        opened = open_envelope(
            raw,
            recipient_device_id=bytes.fromhex(recipient["device_id"]),
            recipient=keys,
            sender_signing_key=bytes.fromhex(vector["sender_signing_key"]),
        )
        assert opened.plaintext.hex() == vector["plaintext"]


def test_stored_vectors_match_their_generator() -> None:
    assert json.loads(VECTORS.read_text()) == generate_vectors()


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(generate_vectors(), indent=2) + "\n")
    print(f"wrote {VECTORS}")
