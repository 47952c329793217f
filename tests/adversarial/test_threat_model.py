"""docs/threat-model.md stays true: every threat names tests that exist, every threat sits in the
STRIDE table, and the data inventory lists every column the server stores."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from securemsg.storage.models import metadata

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "threat-model.md"
TEST_REFERENCE = re.compile(r"`([\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _rows(section: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `section`, as lists of cells."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def _threats() -> dict[str, list[str]]:
    return {row[0]: row for row in _rows(_section("Threats, mitigations and tests"))}


@cache
def _test_functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    )


def test_every_threat_names_tests_and_every_named_test_exists() -> None:
    threats = _threats()
    assert len(threats) >= 20
    missing = []
    for threat, row in threats.items():
        references = TEST_REFERENCE.findall(row[-1])
        assert references, f"{threat} names no test"
        for path, name in references:
            file = ROOT / "tests" / path
            if not file.is_file() or name not in _test_functions(file):
                missing.append(f"{threat}: tests/{path}::{name}")
    assert missing == []


def test_every_threat_sits_in_the_stride_table_and_the_table_names_only_threats() -> None:
    threats = set(_threats())
    placed = set(re.findall(r"\bT\d+\b", _section("STRIDE per component")))
    assert placed == threats


def test_the_data_inventory_lists_every_table_and_column_the_server_stores() -> None:
    documented = {
        row[0].strip("`"): set(re.findall(r"`(\w+)`", row[1]))
        for row in _rows(_section("Data inventory"))
    }
    stored = {
        table.name: {column.name for column in table.columns} for table in metadata.tables.values()
    }
    assert documented == stored
