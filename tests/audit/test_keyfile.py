"""The audit key file: created once with mode 0600, read back, and extended for a rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from securemsg.audit.errors import NoteKeyError
from securemsg.audit.keyfile import (
    KeyFileMissing,
    add_signer,
    default_key_name,
    key_path,
    load_or_create_signers,
    load_signers,
)


def test_first_run_creates_one_private_key_and_later_runs_reuse_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    created = load_or_create_signers(keys, "audit.test/log")
    assert stat.S_IMODE(key_path(keys).stat().st_mode) == 0o600
    again = load_or_create_signers(keys, "another.name/log")
    assert [s.key_string() for s in again] == [s.key_string() for s in created]
    assert created[0].name == "audit.test/log"


def test_reading_without_a_key_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileMissing):
        load_signers(tmp_path / "keys")
    assert not (tmp_path / "keys").exists()


def test_added_key_signs_alongside_the_first_and_names_are_unique(tmp_path: Path) -> None:
    first = load_or_create_signers(tmp_path, "audit.test/log")[0]
    second = add_signer(tmp_path, "audit.test/log/2027")
    assert [s.name for s in load_signers(tmp_path)] == [first.name, second.name]
    with pytest.raises(NoteKeyError, match="already has a key"):
        add_signer(tmp_path, "audit.test/log/2027")


def test_comment_lines_are_ignored_and_a_bad_line_is_refused(tmp_path: Path) -> None:
    signer = load_or_create_signers(tmp_path, "audit.test/log")[0]
    key_path(tmp_path).write_text(f"# retired 2026-01-01\n\n{signer.key_string()}\n")
    assert load_signers(tmp_path)[0].key_id == signer.key_id
    key_path(tmp_path).write_text("PRIVATE+KEY+broken\n")
    with pytest.raises(NoteKeyError):
        load_signers(tmp_path)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("Node-1.Example.ORG", "node-1.example.org/securemsg-audit"),
        ("", "localhost/securemsg-audit"),
        ("a b+c", "a-b-c/securemsg-audit"),
    ],
)
def test_default_key_name_is_a_url_like_name_from_the_host(hostname: str, name: str) -> None:
    assert default_key_name(hostname or "-") == name
