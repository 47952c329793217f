"""Signed notes and their key strings, against the C2SP and golang.org/x/mod/sumdb/note examples."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from securemsg.audit.errors import CheckpointError, NoteKeyError
from securemsg.audit.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    NoteSigner,
    NoteVerifier,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from securemsg.crypto.signing import SigningKey

EXAMPLE = (Path(__file__).parent / "testdata" / "signed-note.md").read_text()


def _example_verifier_key() -> str:
    match = re.search(r"^    (\S+\+[0-9a-f]{8}\+\S+)$", EXAMPLE, re.MULTILINE)
    assert match
    return match.group(1)


def _example_note() -> str:
    match = re.search(r"```\n(.*?)```", EXAMPLE, re.DOTALL)
    assert match
    return match.group(1)


EXAMPLE_VKEY = _example_verifier_key()
EXAMPLE_NOTE = _example_note()

# From the package documentation of golang.org/x/mod/sumdb/note. Ed25519 is deterministic, so
# signing the same text with the same key must give this exact note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

SIGNER = NoteSigner("audit.example/log", SigningKey.from_seed(bytes(range(32))))
OTHER = NoteSigner("witness.example/w1", SigningKey.from_seed(bytes(range(1, 33))))
TEXT = "hello\nworld\n"


# --- the published examples ---------------------------------------------------------------------


def test_c2sp_example_verifies_with_its_verifier_key() -> None:
    assert open_note(EXAMPLE_NOTE, NoteVerifier.parse(EXAMPLE_VKEY)) == (
        "This is an example message.\n"
    )


def test_c2sp_example_key_id_matches_the_key_string() -> None:
    verifier = NoteVerifier.parse(EXAMPLE_VKEY)
    assert verifier.name == "example.com/foo"
    assert key_id(verifier.name, verifier.public_key) == 0x530D903A
    assert verifier.key_string() == EXAMPLE_VKEY


def test_c2sp_example_fails_when_any_byte_changes() -> None:
    verifier = NoteVerifier.parse(EXAMPLE_VKEY)
    raw = EXAMPLE_NOTE.encode()
    for position in range(len(raw)):
        changed = bytearray(raw)
        changed[position] ^= 0x01
        with pytest.raises(CheckpointError):
            open_note(bytes(changed), verifier)


def test_go_example_signer_reproduces_the_documented_note() -> None:
    signer = NoteSigner.parse(GO_SKEY)
    assert signer.verifier.key_string() == GO_VKEY
    assert signer.key_string() == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, NoteVerifier.parse(GO_VKEY)) == GO_TEXT


# --- key strings --------------------------------------------------------------------------------


def test_verifier_key_string_round_trips() -> None:
    key_string = SIGNER.verifier.key_string()
    assert key_string.startswith(f"audit.example/log+{SIGNER.key_id:08x}+")
    assert NoteVerifier.parse(key_string) == SIGNER.verifier


def test_signer_key_string_round_trips_and_keeps_the_seed() -> None:
    parsed = NoteSigner.parse(SIGNER.key_string())
    assert parsed.name == SIGNER.name
    assert parsed.signing_key.seed == SIGNER.signing_key.seed


def test_signer_repr_does_not_show_the_seed() -> None:
    secret = base64.b64encode(b"\x01" + SIGNER.signing_key.seed).decode()
    assert secret not in repr(SIGNER)
    assert SIGNER.signing_key.seed.hex() not in repr(SIGNER.signing_key)


@pytest.mark.parametrize(
    ("key_string", "message"),
    [
        ("example.com/foo+530d903a", "not <name>"),
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "8 hex digits"),
        ("example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "0x01 followed"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
        ("example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "contains ' '"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "empty"),
    ],
)
def test_malformed_verifier_key_string_rejected(key_string: str, message: str) -> None:
    with pytest.raises(NoteKeyError, match=message):
        NoteVerifier.parse(key_string)


@pytest.mark.parametrize(
    "key_string",
    [
        GO_VKEY,
        GO_SKEY.replace("PRIVATE+KEY+", "PRIVATE+KEY-"),
        GO_SKEY.replace("c74f20a3", "c74f20a4"),
        GO_SKEY.replace("+AYEK", "+AoEK"),
        GO_SKEY + "+extra",
    ],
)
def test_malformed_signer_key_string_rejected(key_string: str) -> None:
    with pytest.raises(NoteKeyError):
        NoteSigner.parse(key_string)


def test_key_name_with_plus_rejected() -> None:
    with pytest.raises(NoteKeyError, match="contains '\\+'"):
        NoteSigner("a+b", SIGNER.signing_key)


# --- signing and opening ------------------------------------------------------------------------


def test_signed_note_opens_with_the_signer_verifier() -> None:
    note = sign_note(TEXT, SIGNER)
    assert note.startswith(TEXT + "\n\u2014 audit.example/log ")
    assert open_note(note, SIGNER.verifier) == TEXT


def test_text_with_blank_lines_keeps_them() -> None:
    text = "a\n\nb\n"
    assert open_note(sign_note(text, SIGNER), SIGNER.verifier) == text


def test_signatures_by_unknown_keys_are_ignored() -> None:
    note = sign_note(TEXT, OTHER, SIGNER)
    assert open_note(note, SIGNER.verifier) == TEXT
    assert len(parse_note(note).signatures) == 2


def test_note_signed_only_by_another_key_is_rejected() -> None:
    with pytest.raises(CheckpointError, match=r"no signature by audit\.example/log"):
        open_note(sign_note(TEXT, OTHER), SIGNER.verifier)


def test_same_name_with_another_key_id_is_ignored_not_trusted() -> None:
    # A rotated-out key signs under the same name; its key ID differs, so it is skipped.
    old = NoteSigner(SIGNER.name, SigningKey.from_seed(b"\x07" * 32))
    note = sign_note(TEXT, old)
    with pytest.raises(CheckpointError, match="no signature"):
        open_note(note, SIGNER.verifier)
    assert open_note(sign_note(TEXT, old, SIGNER), SIGNER.verifier) == TEXT


def test_bad_signature_by_trusted_key_rejects_note_even_beside_a_good_one() -> None:
    good = sign_note(TEXT, SIGNER)
    forged_line = SIGNER.sign("other text\n").line()
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(good + forged_line, SIGNER.verifier)


def test_signature_of_wrong_length_by_trusted_key_is_rejected() -> None:
    blob = base64.b64encode(SIGNER.key_id.to_bytes(4, "big") + b"\x00" * 10).decode()
    note = f"{TEXT}\n\u2014 {SIGNER.name} {blob}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(note, SIGNER.verifier)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("hello\n\u2014 a AAAAAAA=\n", "no blank line"),
        (TEXT + "\n", "does not end in a signature line"),
        (TEXT + "\n- audit.example/log AAAAAAA=\n", "em dash"),
        (TEXT + "\n\u2014 audit.example/log AAAAAAA\n", "base64"),
        (TEXT + "\n\u2014 audit.example/log AAAAAAB=\n", "base64"),
        (TEXT + "\n\u2014 audit.example/log AAAA\n", "too short"),
        (TEXT + "\n\u2014 audit.example/log  AAAAAAA=\n", "base64"),
        (TEXT + "\n\u2014  AAAAAAA=\n", "key name"),
        ("tab\there\n\n\u2014 a AAAAAAA=\n", "control character"),
        ("cr\r\n\n\u2014 a AAAAAAA=\n", "control character"),
        (TEXT + "\n\u2014 a AAAAAAA=", "does not end in a signature line"),
    ],
)
def test_malformed_note_rejected(note: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        open_note(note, SIGNER.verifier)


def test_note_that_is_not_utf8_rejected() -> None:
    with pytest.raises(CheckpointError, match="utf-8"):
        open_note(b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n", SIGNER.verifier)
    with pytest.raises(CheckpointError, match="utf-8"):
        open_note("\ud800\n\n\u2014 a AAAAAAA=\n", SIGNER.verifier)


def test_oversized_note_rejected() -> None:
    note = sign_note("x" * MAX_NOTE_BYTES + "\n", SIGNER)
    with pytest.raises(CheckpointError, match="limit"):
        open_note(note, SIGNER.verifier)


def test_note_with_too_many_signatures_rejected() -> None:
    note = sign_note(TEXT, SIGNER) + OTHER.sign(TEXT).line() * MAX_SIGNATURES
    with pytest.raises(CheckpointError, match="more than"):
        open_note(note, SIGNER.verifier)


def test_signing_refuses_text_without_final_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        sign_note("no newline", SIGNER)
