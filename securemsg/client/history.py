"""This device's conversation history, encrypted at rest in a file beside the keystore.

The server keeps no readable history: it removes a delivery once this device acknowledged it.
So the SDK keeps one: each message handed to the application and each message sent from this
device is appended, in that order, to `<keystore>.history` (mode 0600) as a record sealed with
XChaCha20-Poly1305 under a random key that lives inside the keystore, so the keystore's
passphrase guards both. A record is `length (4 bytes, big-endian) || nonce || ciphertext`, and
its byte offset is authenticated with it.

The keystore records how many bytes of the file it has committed (`history_bytes`, saved with
the delivery cursor; the file is synced before each keystore save). Bytes past that point were
written after the last save, by a process that then stopped: they are dropped when the keystore
opens, and their messages are delivered (or still pending in the outbox) again. A message handed
out again (the application did not get to consume it before a restart) is appended again, and
`read` keeps its first record only (same conversation, sending device, counter and id). A file
shorter than the committed length, or a record edited, moved or removed, makes `read` raise
`HistoryTampered`.

A send is recorded when it is sent, before the server accepts it (a send refused later is
reported as `SendFailed` and stays in the history). A supervisor's device records nothing: the
shared history stays on the server, readable only under a grant in force.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from securemsg.client.errors import HistoryTampered, KeystoreError
from securemsg.client.events import AccountId, ConversationId, DeviceId, Message, MessageId
from securemsg.crypto.errors import DecryptionFailed
from securemsg.crypto.keystore import open_record, seal_record

SUFFIX = ".history"
_LENGTH_BYTES = 4
MAX_RECORD_BYTES = 1 << 24  # far above any message a server accepts


def history_path(keystore: Path) -> Path:
    return keystore.with_name(keystore.name + SUFFIX)


class History:
    """The history file of one keystore: `append` on the owner's thread, `sync` from any."""

    def __init__(self, path: Path, key: bytes, committed: int, *, exists: bool) -> None:
        """`committed`: the length the keystore counts. `exists`: whether that keystore is on
        disk (a new one leaves a file it does not own alone until it appends)."""
        self.path = path
        self.size = committed  # bytes this history holds, appended since the last save included
        self._key = key
        self._fd: int | None = None
        self._lock = threading.Lock()
        if exists:
            self._drop_uncommitted(committed)

    def _drop_uncommitted(self, committed: int) -> None:
        try:
            actual = self.path.stat().st_size
        except FileNotFoundError:
            return
        if actual > committed:
            with self.path.open("r+b") as file:
                file.truncate(committed)
                os.fsync(file.fileno())

    def append(self, message: Message) -> int:
        """Seal and append `message`; return the file's new size (the keystore's to commit).

        Written at `size`, not at the file's end: a write that failed part-way is overwritten by
        the next one (and is past the committed length meanwhile). Raises `KeystoreError`.
        """
        sealed = seal_record(self._key, _encode(message), self.size)
        record = len(sealed).to_bytes(_LENGTH_BYTES, "big") + sealed
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                view, offset = memoryview(record), self.size
                while view:
                    written = os.pwrite(self._fd, view, offset)
                    view, offset = view[written:], offset + written
            except OSError as error:
                raise KeystoreError(
                    f"cannot write history file {self.path}: {error.strerror}"
                ) from error
            self.size += len(record)
        return self.size

    def sync(self) -> None:
        """Make what was appended durable (before the keystore that counts it is saved).

        Called from the keystore's writer thread; the fsync runs on a duplicate descriptor,
        outside the lock, so appends on the event loop do not wait for the disk."""
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, conversation: uuid.UUID | None = None) -> list[Message]:
        """The recorded messages (of `conversation`, if given), in the order they were recorded."""
        size = self.size  # appends on the owner's thread only add bytes after it
        try:
            data = self.path.read_bytes()[:size]
        except FileNotFoundError:
            data = b""
        if len(data) < size:
            raise HistoryTampered(
                f"history file {self.path} holds {len(data)} bytes; the keystore counts {size}"
            )
        messages: list[Message] = []
        seen: set[tuple[uuid.UUID, uuid.UUID, int, str]] = set()
        position = 0
        while position < len(data):
            start = position + _LENGTH_BYTES
            length = int.from_bytes(data[position:start], "big")
            if start > len(data) or length > MAX_RECORD_BYTES or start + length > len(data):
                raise HistoryTampered(f"history record at byte {position} is cut short")
            try:
                message = _decode(open_record(self._key, data[start : start + length], position))
            except DecryptionFailed:
                raise HistoryTampered(
                    f"history record at byte {position} was modified or moved"
                ) from None
            key = (message.conversation, message.sender_device, message.counter, message.message_id)
            if key not in seen and (conversation is None or message.conversation == conversation):
                messages.append(message)
            seen.add(key)
            position = start + length
        return messages

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _encode(message: Message) -> bytes:
    content = message.content
    record: dict[str, Any] = {
        "conversation": str(message.conversation),
        "message_id": message.message_id,
        "sender": str(message.sender),
        "sender_device": str(message.sender_device),
        "sent_ms": message.sent_ms,
        "counter": message.counter,
        "outgoing": message.outgoing,
        "seq": message.seq,
        "text" if isinstance(content, str) else "bytes": content
        if isinstance(content, str)
        else base64.b64encode(content).decode("ascii"),
    }
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def _decode(plaintext: bytes) -> Message:
    data = json.loads(plaintext)
    content: str | bytes = (
        data["text"] if "text" in data else base64.b64decode(data["bytes"], validate=True)
    )
    return Message(
        conversation=ConversationId(uuid.UUID(data["conversation"])),
        message_id=MessageId(data["message_id"]),
        sender=AccountId(uuid.UUID(data["sender"])),
        sender_device=DeviceId(uuid.UUID(data["sender_device"])),
        sent_ms=int(data["sent_ms"]),
        counter=int(data["counter"]),
        content=content,
        outgoing=bool(data["outgoing"]),
        seq=int(data["seq"]),
    )
