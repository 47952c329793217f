"""The RFC 6962 proof vectors of transparency-dev/merkle, each accepted or rejected as listed."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from securemsg.audit.errors import ProofError
from securemsg.audit.merkle import verify_consistency, verify_inclusion

VECTORS = Path(__file__).parent / "testdata" / "rfc6962"


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(path.relative_to(VECTORS)), json.loads(path.read_text())) for path in files]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in vector["proof"] or []]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def _cases(vectors: list[tuple[str, dict[str, Any]]], want_err: bool) -> list[Any]:
    return [pytest.param(v, id=name) for name, v in vectors if v["wantErr"] is want_err]


def _check_inclusion(vector: dict[str, Any]) -> None:
    verify_inclusion(
        _b64(vector["leafHash"]),
        vector["leafIdx"],
        vector["treeSize"],
        _proof(vector),
        _b64(vector["root"]),
    )


def _check_consistency(vector: dict[str, Any]) -> None:
    verify_consistency(
        vector["size1"],
        vector["size2"],
        _proof(vector),
        _b64(vector["root1"]),
        _b64(vector["root2"]),
    )


def test_vector_directories_are_all_found() -> None:
    assert len(INCLUSION) > 50
    assert len(CONSISTENCY) > 50
    assert any(not v["wantErr"] for _, v in INCLUSION)
    assert any(not v["wantErr"] for _, v in CONSISTENCY)


@pytest.mark.parametrize("vector", _cases(INCLUSION, want_err=False))
def test_inclusion_vector_accepted_when_no_error_wanted(vector: dict[str, Any]) -> None:
    _check_inclusion(vector)


@pytest.mark.parametrize("vector", _cases(INCLUSION, want_err=True))
def test_inclusion_vector_rejected_when_want_err(vector: dict[str, Any]) -> None:
    with pytest.raises(ProofError):
        _check_inclusion(vector)


@pytest.mark.parametrize("vector", _cases(CONSISTENCY, want_err=False))
def test_consistency_vector_accepted_when_no_error_wanted(vector: dict[str, Any]) -> None:
    _check_consistency(vector)


@pytest.mark.parametrize("vector", _cases(CONSISTENCY, want_err=True))
def test_consistency_vector_rejected_when_want_err(vector: dict[str, Any]) -> None:
    with pytest.raises(ProofError):
        _check_consistency(vector)
