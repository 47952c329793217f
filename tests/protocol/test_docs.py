"""docs/protocol.md lists every error code and close code the code can send."""

from __future__ import annotations

from pathlib import Path

from securemsg.protocol.errors import CloseCode, ErrorCode

PROTOCOL = (Path(__file__).parent.parent.parent / "docs" / "protocol.md").read_text()


def test_every_error_code_is_documented() -> None:
    assert [c.value for c in ErrorCode if f"`{c.value}`" not in PROTOCOL] == []


def test_every_close_code_is_documented() -> None:
    assert [c.value for c in CloseCode if f"| {c.value} |" not in PROTOCOL] == []
