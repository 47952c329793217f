"""`securemsg demo` runs end to end and leaves no message text in its data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MARKER = "MARKER-5e1f-demo-must-not-leak"


@pytest.mark.slow
def test_demo_exits_0_and_its_data_directory_never_holds_the_message(tmp_path: Path) -> None:
    # As a newcomer runs it: the `securemsg demo` command, with its default (new, temporary)
    # data directory, made here under tmp_path.
    result = subprocess.run(
        [sys.executable, "-m", "securemsg", "demo", "--message", MARKER],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (data_dir,) = tmp_path.glob("securemsg-demo-*")
    assert str(data_dir) in result.stdout  # left for inspection, and the newcomer is told where
    assert result.stdout.count(MARKER) == 3  # both people saw it, then the supervisor...
    for step in (
        "sam reads live:",
        "both show it ended",
        "refused (forbidden), a second officer must decide",
        "verified offline: ok: legal export",
        "carl's accounting of disclosures:",
        "The whole audit log, verified: ok:",
    ):
        assert step in result.stdout, step
    files = [p for p in data_dir.rglob("*") if p.is_file()]  # the legal export among them
    assert any(p.suffix == ".keys" for p in files) and any(p.name == "securemsg.db" for p in files)
    for path in files:  # ...and it is nowhere at rest
        data = path.read_bytes()
        assert MARKER.encode() not in data, path
        assert MARKER.encode("utf-16-le") not in data, path


def test_demo_refuses_a_data_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "securemsg", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "not empty" in result.stderr
