"""The layering rules of docs/architecture.md, enforced on the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "securemsg"

# library -> the only package allowed to import it
OWNERS = {
    "nacl": "crypto",
    "sqlalchemy": "storage",
    "alembic": "storage",
    "starlette": "server",
    "websockets": "client",
    "argon2": None,
    "uvicorn": None,
}
# argon2 is used by server/passwords.py and the keystore KDF in crypto/; uvicorn by the CLI and
# by the protocol classes the CLI hands it (server/protocols.py).
ALLOWED_EXTRA = {
    ("argon2", "server/passwords.py"),
    ("argon2", "crypto/keystore.py"),
    ("uvicorn", "cli.py"),
    ("uvicorn", "server/protocols.py"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module.startswith("securemsg."):
                names.add(node.module)
    return names


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_third_party_libraries_are_imported_only_by_their_layer(path: Path) -> None:
    relative = str(path.relative_to(PACKAGE))
    layer = relative.split("/")[0]
    for library, owner in OWNERS.items():
        if library in _imports(path) and (library, relative) not in ALLOWED_EXTRA:
            assert owner is not None and layer == owner, f"{relative} imports {library}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "protocol").glob("*.py")), ids=lambda p: p.name)
def test_protocol_is_pure_stdlib(path: Path) -> None:
    for name in _imports(path):
        if name.startswith("securemsg."):
            assert name.startswith(("securemsg.protocol", "securemsg.errors")), name
        else:
            assert name in {
                "__future__",
                "base64",
                "binascii",
                "dataclasses",
                "enum",
                "json",
                "re",
                "struct",
                "uuid",
                "typing",
                "collections",
                "itertools",
                "securemsg",
                "hashlib",
                "hmac",
                "math",
            }, name


AUDIT_CORE = ["merkle.py", "note.py", "checkpoint.py", "verify.py", "errors.py"]


@pytest.mark.parametrize("path", [PACKAGE / "audit" / name for name in AUDIT_CORE], ids=AUDIT_CORE)
def test_audit_core_does_no_io(path: Path) -> None:
    for name in _imports(path):
        assert name not in {"socket", "sqlite3", "asyncio", "httpx", "os", "pathlib"}, name
