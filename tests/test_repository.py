"""What git must never hold: keys, databases and their WAL files, the data directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "path",
    [
        "keys/audit-signing.key",
        "keys/tls.pem",
        "data/securemsg.db",
        "securemsg.db",
        "securemsg.db-wal",
        "securemsg.db-shm",
        "elsewhere/store.sqlite3",
        ".venv/bin/python",
    ],
)
def test_secrets_and_databases_are_ignored_by_git(path: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", path], cwd=ROOT, check=False
    )
    assert result.returncode == 0, f"{path} would be committed"


def test_the_keys_directory_holds_only_its_readme_and_ignore_file() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "keys"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == ["keys/.gitignore", "keys/README.md"]
