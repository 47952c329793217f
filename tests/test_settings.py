"""Settings: one object, environment variables, safe defaults, every field documented."""

from __future__ import annotations

import dataclasses
import re
import tokenize
from pathlib import Path

import pytest

from securemsg.settings import Settings

DOCS = Path(__file__).parent.parent / "docs"


def test_environment_variables_set_fields_and_arguments_win() -> None:
    env = {
        "SECUREMSG_MAX_FRAME_BYTES": "1000",
        "SECUREMSG_ALLOWED_ORIGINS": "https://a, https://b",
        "SECUREMSG_AUTO_MIGRATE": "no",
        "SECUREMSG_PORT": "9000",
    }
    settings = Settings.load(env, port=9100)
    assert settings.max_frame_bytes == 1000
    assert settings.allowed_origins == ("https://a", "https://b")
    assert settings.auto_migrate is False
    assert settings.port == 9100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECUREMSG_PORT", "eighty"),
        ("SECUREMSG_AUTO_MIGRATE", "maybe"),
        ("SECUREMSG_IDLE_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_unreadable_or_negative_setting_is_refused_with_its_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name.removeprefix("SECUREMSG_").lower()):
        Settings.load({name: value})


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown settings: bogus"):
        Settings.load({}, bogus=1)


def test_default_database_is_sqlite_in_the_data_directory() -> None:
    settings = Settings.load({}, data_dir=Path("/srv/sm"))
    assert settings.effective_database_url == "sqlite+aiosqlite:////srv/sm/securemsg.db"


def test_every_setting_is_documented_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    documented = set(re.findall(r"`([a-z0-9_]+)`", text))
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in documented]
    assert missing == []


def test_every_limit_has_a_positive_default() -> None:
    for field in dataclasses.fields(Settings):
        if field.name.startswith("max_") or field.name.endswith(("_seconds", "_bytes")):
            assert getattr(Settings(), field.name) > 0, field.name


# Settings no test has to name, each with the reason. Keep it empty: a new setting gets a test
# that sets it low on a real server (or a service object) and checks the behaviour at the limit.
UNEXERCISED_ALLOWED: dict[str, str] = {}


def _code_of(path: Path) -> str:
    """The names and string literals of a Python file: a mention in a comment is no test."""
    with path.open("rb") as file:
        tokens = tokenize.tokenize(file.readline)
        return " ".join(t.string for t in tokens if t.type in (tokenize.NAME, tokenize.STRING))


def test_every_setting_is_exercised_by_a_test() -> None:
    tests = Path(__file__).parent
    texts = [
        _code_of(path)
        for path in sorted(tests.rglob("*.py"))
        if path.resolve() != Path(__file__).resolve()
    ]
    unexercised = []
    for field in dataclasses.fields(Settings):
        names = (field.name, "SECUREMSG_" + field.name.upper())
        pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b")
        if not any(pattern.search(text) for text in texts):
            unexercised.append(field.name)
    assert sorted(set(unexercised) - set(UNEXERCISED_ALLOWED)) == []
    # An entry that a test now exercises is stale: take it off the list.
    assert sorted(set(UNEXERCISED_ALLOWED) - set(unexercised)) == []
