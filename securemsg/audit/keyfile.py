"""The audit log's signing keys: `<keys_dir>/audit.key`, one signer key string per line.

The server creates the file on first run (mode 0600) with one new Ed25519 key; every key in it
signs every checkpoint, which is how a rotation runs (docs/audit.md, "Key rotation"). Nothing
else creates keys: a CLI pointed at the wrong directory fails instead of starting a second log.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from securemsg.audit.errors import NoteKeyError
from securemsg.audit.note import NoteSigner, NoteVerifier, check_key_name

KEY_FILE_NAME = "audit.key"

log = logging.getLogger("securemsg.audit")

_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")


class KeyFileMissing(NoteKeyError):
    """There is no audit key file where one was expected."""


def key_path(keys_dir: Path) -> Path:
    return keys_dir / KEY_FILE_NAME


def default_key_name(hostname: str | None = None) -> str:
    """`<host>/securemsg-audit`: a schema-less URL naming this log, as C2SP recommends."""
    host = _NAME_CHARS.sub("-", (hostname or socket.gethostname()).lower()).strip("-.")
    return f"{host or 'localhost'}/securemsg-audit"


def load_signers(keys_dir: Path) -> list[NoteSigner]:
    """Every signer in the key file, in file order; raise `KeyFileMissing` if there is none."""
    path = key_path(keys_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileMissing(f"no audit key file at {path}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("audit key file %s is readable by other users; chmod 600 it", path)
    signers = [
        NoteSigner.parse(line)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not signers:
        raise KeyFileMissing(f"audit key file {path} holds no key")
    names = [(s.name, s.key_id) for s in signers]
    if len(set(names)) != len(names):
        raise NoteKeyError(f"audit key file {path} lists a key twice")
    return signers


def load_or_create_signers(keys_dir: Path, name: str | None = None) -> list[NoteSigner]:
    """The signers in the key file, creating the file with one new key (named `name`) if absent."""
    try:
        return load_signers(keys_dir)
    except KeyFileMissing:
        if key_path(keys_dir).exists():
            raise
    signer = NoteSigner.generate(name or default_key_name())
    try:
        _write_new(key_path(keys_dir), signer.key_string() + "\n")
    except FileExistsError:  # another process created it first: use theirs
        return load_signers(keys_dir)
    log.info("created audit log key %s", signer.verifier.key_string())
    return [signer]


def add_signer(keys_dir: Path, name: str) -> NoteSigner:
    """Append a new key to the key file (created if absent); it signs from the next checkpoint."""
    check_key_name(name)
    signer = NoteSigner.generate(name)
    path = key_path(keys_dir)
    if not path.exists():
        _write_new(path, signer.key_string() + "\n")
        return signer
    existing = load_signers(keys_dir)
    if any(s.name == name for s in existing):
        raise NoteKeyError(f"audit key file {path} already has a key named {name!r}")
    with path.open("a", encoding="utf-8") as file:
        file.write(signer.key_string() + "\n")
    return signer


def verifiers(signers: list[NoteSigner]) -> list[NoteVerifier]:
    return [signer.verifier for signer in signers]


def _write_new(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting at once never both create (and then overwrite) a key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
