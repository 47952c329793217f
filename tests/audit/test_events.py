"""Audit events: canonical bytes, the salted commitment, and the leaf derived from them."""

from __future__ import annotations

import json
import uuid
from hashlib import sha256

import pytest

from securemsg.audit.events import (
    EVENT_FIELDS,
    LEAF_FIELDS,
    Actor,
    AuditAction,
    AuditEvent,
    Outcome,
    SealedEvent,
    Source,
    Subject,
    canonical_json,
    check_leaf,
    clean_text,
    commitment,
    expected_leaf,
)

ACCOUNT = uuid.UUID("6f1c2a3b-0000-4000-8000-000000000001")
SALT = bytes(range(16))
EVENT = AuditEvent(
    action=AuditAction.LOGIN,
    outcome=Outcome.SUCCESS,
    actor=Actor(ACCOUNT, "carl", "client"),
    subject=Subject(ACCOUNT, "carl"),
    resource="session:1",
    purpose="authentication",
    source=Source("10.0.0.1", "req-1"),
    details={"count": 2, "ids": ("a", "b"), "flag": True, "none": None},
)


def test_event_object_has_every_documented_field_and_nothing_else() -> None:
    fields = EVENT.fields(1_700_000_000_000)
    assert set(fields) == EVENT_FIELDS
    assert fields["actor_id"] == str(ACCOUNT) and fields["details"]["ids"] == ["a", "b"]


def test_canonical_json_sorts_keys_without_spaces_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": "é\n", "c": None}) == '{"a":"é\\n","b":1,"c":null}'.encode()


def test_commitment_is_sha256_of_prefix_salt_and_event_bytes() -> None:
    event_bytes = canonical_json(EVENT.fields(5))
    want = sha256(b"securemsg/v1/audit-event\n" + SALT + event_bytes).digest()
    assert commitment(SALT, event_bytes) == want


def test_leaf_holds_only_pseudonymous_fields_and_the_commitment() -> None:
    sealed = SealedEvent(5, EVENT, SALT)
    leaf = check_leaf(sealed.leaf)
    assert set(leaf) == LEAF_FIELDS
    assert "carl" not in sealed.leaf.decode() and "10.0.0.1" not in sealed.leaf.decode()
    assert leaf["actor_id"] == str(ACCOUNT) and leaf["action"] == "login"
    assert sealed.leaf == expected_leaf(EVENT.fields(5), SALT)


def test_event_read_back_from_its_fields_is_the_same_event() -> None:
    time_ms, event = AuditEvent.from_fields(json.loads(canonical_json(EVENT.fields(7))))
    assert (time_ms, event) == (7, EVENT)


@pytest.mark.parametrize(
    "change",
    [
        {"actor_name": "mallory"},
        {"outcome": "failure"},
        {"time_ms": 6},
        {"details": {"count": 3, "ids": ["a", "b"], "flag": True, "none": None}},
    ],
)
def test_any_change_to_the_event_changes_the_leaf(change: dict[str, object]) -> None:
    fields = {**EVENT.fields(5), **change}
    assert expected_leaf(fields, SALT) != expected_leaf(EVENT.fields(5), SALT)


def test_another_salt_gives_another_commitment_for_the_same_event() -> None:
    assert expected_leaf(EVENT.fields(5), SALT) != expected_leaf(EVENT.fields(5), bytes(16))


@pytest.mark.parametrize(
    "make",
    [
        lambda: AuditEvent("Login!", "success"),
        lambda: AuditEvent("login", "maybe"),
        lambda: AuditEvent("login", "success", actor=Actor(None, "")),
        lambda: AuditEvent("login", "success", actor=Actor(None, "a\nb")),
        lambda: AuditEvent("login", "success", actor=Actor(None, "x" * 65)),
        lambda: AuditEvent("login", "success", purpose="\ud800"),
        lambda: AuditEvent("login", "success", details={"Bad-Key": 1}),
        lambda: AuditEvent("login", "success", details={"n": 2**60}),
        lambda: AuditEvent("login", "success", details={"f": 1.5}),  # type: ignore[dict-item]
        lambda: AuditEvent(
            "login",
            "success",
            details={
                "big": "x" * 1000,
                "b2": "y" * 1000,
                "b3": "z" * 1000,
                "b4": "w" * 1000,
                "b5": "v" * 1000,
            },
        ),
    ],
)
def test_malformed_event_is_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_untrusted_text_is_cleaned_to_fit_an_event() -> None:
    cleaned = clean_text("eve\n\x00\ud800" + "x" * 300, 64)
    assert len(cleaned) == 64 and "\n" not in cleaned and "\ufffd" in cleaned
    AuditEvent("login.failed", "failure", actor=Actor(None, cleaned))


@pytest.mark.parametrize(
    "leaf",
    [
        b"not json",
        b'{"v":1}',
        canonical_json({**json.loads(SealedEvent(5, EVENT, SALT).leaf), "v": 2}),
        SealedEvent(5, EVENT, SALT).leaf.replace(b",", b", ", 1),  # not canonical
    ],
)
def test_malformed_leaf_is_refused(leaf: bytes) -> None:
    with pytest.raises(ValueError):
        check_leaf(leaf)
