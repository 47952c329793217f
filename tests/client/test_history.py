"""A participant's conversation history: kept on the device, encrypted, complete across restarts,
and refusing to read when its file was changed."""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

import pytest

from securemsg.client import HistoryTampered, KeystoreError, Message
from securemsg.client.events import AccountId, ConversationId, DeviceId, MessageId
from securemsg.client.history import History, history_path
from securemsg.crypto.keystore import new_record_key
from tests.client.conftest import OpenClient, Pair, next_message

MARKER = "HISTORY-MARKER-5d1e"


def _lines(messages: list[Message]) -> list[tuple[str | bytes, bool]]:
    return [(m.content, m.outgoing) for m in messages]


async def test_history_holds_both_sides_in_order_and_survives_a_restart(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess") as tess, open_client("carl") as carl:
        await carl.send(conversation, f"first {MARKER}")
        assert (await next_message(tess)).text == f"first {MARKER}"
        await tess.send(conversation, b"\x00second")
        assert (await next_message(carl)).content == b"\x00second"
        await carl.send(conversation, "third")
        assert (await next_message(tess)).text == "third"
        live = await carl.history(conversation)
    assert _lines(live) == [(f"first {MARKER}", True), (b"\x00second", False), ("third", True)]
    async with open_client("carl") as carl, open_client("tess") as tess:
        carls, tesss = await carl.history(conversation), await tess.history(conversation)
        assert await carl.history(uuid.uuid4()) == []
    assert _lines(carls) == [(f"first {MARKER}", True), (b"\x00second", False), ("third", True)]
    assert _lines(tesss) == [(f"first {MARKER}", False), (b"\x00second", True), ("third", False)]
    assert [m.counter for m in carls] == [1, 1, 2]
    assert carls[1].sender == tess.account and carls[0].sender == carl.account
    for name in ("carl", "tess"):
        file = history_path(pair.keystore(name))
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert MARKER.encode() not in file.read_bytes()


def _message(text: str) -> Message:
    return Message(
        conversation=ConversationId(uuid.UUID(int=1)),
        message_id=MessageId(uuid.uuid4().hex),
        sender=AccountId(uuid.UUID(int=2)),
        sender_device=DeviceId(uuid.UUID(int=3)),
        sent_ms=1_767_225_600_000,
        counter=1,
        content=text,
        outgoing=False,
        seq=7,
    )


def _written(path: Path, key: bytes, texts: list[str]) -> list[int]:
    """Append `texts`; return the file size after each."""
    history = History(path, key, 0, exists=False)
    try:
        return [history.append(_message(text)) for text in texts]
    finally:
        history.close()


def _swap_first_two(data: bytes, ends: list[int]) -> bytes:
    return data[ends[0] : ends[1]] + data[: ends[0]] + data[ends[1] :]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda data, ends: data[:10] + bytes([data[10] ^ 1]) + data[11:], id="edited"),
        pytest.param(lambda data, ends: data[ends[0] :], id="first-removed"),
        pytest.param(_swap_first_two, id="reordered"),
        pytest.param(lambda data, ends: data[: ends[2] - 1], id="truncated"),
    ],
)
@pytest.mark.parametrize("committed", ["as-before", "as-changed"])
def test_changed_history_file_raises_history_tampered(
    tmp_path: Path, change: object, committed: str
) -> None:
    """Whether the keystore's count still matches (a file cut short) or was changed along with
    the file (so only the records' authenticated offsets can tell)."""
    path, key = tmp_path / "h.history", new_record_key()
    ends = _written(path, key, ["a", "b", "c"])
    changed = change(path.read_bytes(), ends)  # type: ignore[operator]
    path.write_bytes(changed)
    length = ends[-1] if committed == "as-before" else len(changed)
    with pytest.raises(HistoryTampered):
        History(path, key, length, exists=True).read()


def test_records_past_the_committed_length_are_dropped_on_open(tmp_path: Path) -> None:
    path, key = tmp_path / "h.history", new_record_key()
    ends = _written(path, key, ["kept", "written after the last keystore save"])
    history = History(path, key, ends[0], exists=True)
    assert [m.content for m in history.read()] == ["kept"]
    assert path.stat().st_size == ends[0]
    history.append(_message("delivered again"))
    assert [m.content for m in history.read()] == ["kept", "delivered again"]
    history.close()


def test_a_message_handed_out_again_is_listed_once(tmp_path: Path) -> None:
    path, key = tmp_path / "h.history", new_record_key()
    history = History(path, key, 0, exists=False)
    again = _message("handed out before a restart, then again")
    for message in (again, _message("next"), again):
        history.append(message)
    assert [m.content for m in history.read()] == [again.content, "next"]
    history.close()


def test_history_does_not_open_under_another_key(tmp_path: Path) -> None:
    path = tmp_path / "h.history"
    ends = _written(path, new_record_key(), ["a"])
    with pytest.raises(HistoryTampered):
        History(path, new_record_key(), ends[-1], exists=True).read()


def test_a_failed_write_is_an_sdk_error_and_the_next_one_overwrites_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key = tmp_path / "h.history", new_record_key()
    history = History(path, key, 0, exists=False)
    first = history.append(_message("before the disk filled"))
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data)[:7], offset)  # part of the record reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(KeystoreError, match="No space left"):
        history.append(_message("lost to the full disk"))
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert history.size == first
    history.append(_message("after space was freed"))
    read = [m.content for m in history.read()]
    assert read == ["before the disk filled", "after space was freed"]
    history.close()


def test_a_new_keystore_leaves_a_history_file_it_does_not_own_alone(tmp_path: Path) -> None:
    path, key = tmp_path / "h.history", new_record_key()
    ends = _written(path, key, ["someone else's"])
    History(path, new_record_key(), 0, exists=False).close()
    assert path.stat().st_size == ends[-1]
    assert [m.content for m in History(path, key, ends[-1], exists=True).read()] == [
        "someone else's"
    ]
