"""Checkpoints: signing, opening, and everything that must make opening fail."""

from __future__ import annotations

import base64

import pytest

from securemsg.audit.checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint, sign_checkpoint
from securemsg.audit.errors import CheckpointError
from securemsg.audit.merkle import EMPTY_ROOT, leaf_hash
from securemsg.audit.note import NoteSigner, sign_note
from securemsg.crypto.signing import SigningKey

ORIGIN = "audit.example/log"
SIGNER = NoteSigner(ORIGIN, SigningKey.from_seed(bytes(range(32))))
ROOT = leaf_hash(b"some root")
ROOT_B64 = base64.b64encode(ROOT).decode()


def test_checkpoint_round_trips_through_sign_and_open() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, 12345, ROOT)
    assert note.startswith(f"{ORIGIN}\n12345\n{ROOT_B64}\n\n\u2014 {ORIGIN} ")
    assert open_checkpoint(note, SIGNER.verifier) == Checkpoint(ORIGIN, 12345, ROOT)


def test_checkpoint_opens_with_a_verifier_key_string() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, 7, ROOT)
    assert open_checkpoint(note, SIGNER.verifier.key_string()).size == 7


def test_empty_tree_checkpoint_round_trips() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, 0, EMPTY_ROOT)
    assert open_checkpoint(note, SIGNER.verifier) == Checkpoint(ORIGIN, 0, EMPTY_ROOT)


def test_extension_lines_round_trip() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, 3, ROOT, extensions=["ext one", "ext two"])
    checkpoint = open_checkpoint(note, SIGNER.verifier)
    assert checkpoint.extensions == ("ext one", "ext two")


def test_checkpoint_for_another_origin_rejected_when_origin_given() -> None:
    note = sign_checkpoint(SIGNER, "other.example/log", 3, ROOT)
    assert open_checkpoint(note, SIGNER.verifier).origin == "other.example/log"
    with pytest.raises(CheckpointError, match=r"want 'audit\.example/log'"):
        open_checkpoint(note, SIGNER.verifier, origin=ORIGIN)


def _tamper(note: str, old: str, new: str) -> str:
    assert note.count(old) >= 1
    return note.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n12345\n", "\n12346\n"),
        (f"\n{ROOT_B64}\n", f"\n{base64.b64encode(leaf_hash(b'other')).decode()}\n"),
        (f"{ORIGIN}\n", "audit.example/lag\n"),
    ],
    ids=["size", "root", "origin"],
)
def test_tampered_checkpoint_fails_signature_check(old: str, new: str) -> None:
    note = _tamper(sign_checkpoint(SIGNER, ORIGIN, 12345, ROOT), old, new)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(note, SIGNER.verifier)


def test_tampered_signature_fails() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, 12345, ROOT)
    text, _, signature_line = note.rpartition("\u2014 ")
    name, _, encoded = signature_line.strip().partition(" ")
    blob = bytearray(base64.b64decode(encoded))
    blob[10] ^= 0x40
    forged = f"{text}\u2014 {name} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(forged, SIGNER.verifier)


def test_checkpoint_signed_by_another_key_rejected() -> None:
    impostor = NoteSigner(ORIGIN, SigningKey.from_seed(b"\x09" * 32))
    with pytest.raises(CheckpointError, match="no signature"):
        open_checkpoint(sign_checkpoint(impostor, ORIGIN, 1, ROOT), SIGNER.verifier)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIGIN}\n012\n{ROOT_B64}\n", "not a decimal"),
        (f"{ORIGIN}\n+12\n{ROOT_B64}\n", "not a decimal"),
        (f"{ORIGIN}\n 12\n{ROOT_B64}\n", "not a decimal"),
        (f"{ORIGIN}\n\n{ROOT_B64}\n", "not a decimal"),
        (f"{ORIGIN}\n{'1' * 21}\n{ROOT_B64}\n", "not a decimal"),
        (f"{ORIGIN}\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n", "outside"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n12\n{ROOT_B64.rstrip('=')}\n", "base64"),
        (f"{ORIGIN}\n12\n", "want at least 3"),
        (f"\n12\n{ROOT_B64}\n", "origin is empty"),
        (f"{ORIGIN}\n12\n{ROOT_B64}\next\n\nmore\n", "extension line is empty"),
    ],
)
def test_malformed_checkpoint_rejected_even_when_signed(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(sign_note(text, SIGNER), SIGNER.verifier)


def test_largest_uint64_size_accepted() -> None:
    note = sign_checkpoint(SIGNER, ORIGIN, MAX_TREE_SIZE, ROOT)
    assert open_checkpoint(note, SIGNER.verifier).size == MAX_TREE_SIZE


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [("", 1, ROOT), (ORIGIN, -1, ROOT), (ORIGIN, 1, ROOT[:16]), ("two\nlines", 1, ROOT)],
)
def test_signing_refuses_a_malformed_checkpoint(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        sign_checkpoint(SIGNER, origin, size, root)


def test_rotation_checkpoint_signed_by_old_and_new_keys_opens_with_either() -> None:
    new = NoteSigner(f"{ORIGIN}/2026", SigningKey.from_seed(b"\x05" * 32))
    old_only = sign_checkpoint(SIGNER, ORIGIN, 10, ROOT)
    both = sign_note(Checkpoint(ORIGIN, 11, ROOT).text(), SIGNER, new)
    assert open_checkpoint(both, SIGNER.verifier, origin=ORIGIN).size == 11
    assert open_checkpoint(both, new.verifier, origin=ORIGIN).size == 11
    assert open_checkpoint(old_only, SIGNER.verifier).size == 10
    with pytest.raises(CheckpointError, match="no signature"):
        open_checkpoint(old_only, new.verifier)
