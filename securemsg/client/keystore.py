"""The keystore file: this device's keys and everything it must remember, encrypted at rest.

One file holds the device keys (and the account identity key on the device that manages the
account's devices), the pinned identity keys and trusted device lists of peers, the delivery
cursor, the message chains, the sends not yet accepted, and the key and committed length of
the history file beside it (`history.py`). It is sealed with a passphrase
(`securemsg.crypto.keystore`: Argon2id + XChaCha20-Poly1305), written with mode 0600 by
write-to-temporary-then-rename, and locked against a second process opening it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from securemsg.client.chain import ReceiveChain, SendChain
from securemsg.client.errors import KeystoreError, KeystoreTampered, WrongPassphrase
from securemsg.client.history import History, history_path
from securemsg.crypto.errors import CryptoError, DecryptionFailed
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.crypto.keystore import (
    KdfParams,
    PassphraseKey,
    PassphraseMismatch,
    new_record_key,
    open_sealed,
)
from securemsg.protocol.devices import DeviceList, parse_device_list

FORMAT = 1

try:  # POSIX advisory locks; elsewhere the lock is skipped
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]


@dataclass
class PeerRecord:
    """What this device trusts about one account (peers and its own)."""

    identity_key: bytes  # pinned AIK (trusted on first use, confirmed by safety numbers)
    verified: bool = False
    list_version: int = 0  # version of the last accepted device list; 0: none yet
    device_list: bytes | None = None  # its raw bytes
    known_devices: dict[bytes, bytes] = field(default_factory=dict)  # device id -> signing key
    revoked_ms: dict[bytes, int] = field(default_factory=dict)  # device id -> when it left a list
    pending_identity_key: bytes | None = None  # a different AIK the server now shows

    def adopt(self, listed: DeviceList) -> tuple[set[bytes], set[bytes]]:
        """Trust a verified device list; return the device ids (added, removed)."""
        before = (
            set()
            if self.device_list is None
            else set(parse_device_list(self.device_list).device_ids)
        )
        after = set(listed.device_ids)
        self.list_version, self.device_list = listed.list_version, listed.raw
        for entry in listed.entries:
            self.known_devices[entry.device_id] = entry.signing_key
            self.revoked_ms.pop(entry.device_id, None)
        for device in before - after:
            self.revoked_ms[device] = listed.created_ms  # signed by the identity key
        return after - before, before - after

    def to_json(self) -> dict[str, Any]:
        return {
            "identity_key": _b64(self.identity_key),
            "verified": self.verified,
            "list_version": self.list_version,
            "device_list": None if self.device_list is None else _b64(self.device_list),
            "known_devices": {d.hex(): _b64(k) for d, k in self.known_devices.items()},
            "revoked_ms": {d.hex(): ms for d, ms in self.revoked_ms.items()},
            "pending_identity_key": None
            if self.pending_identity_key is None
            else _b64(self.pending_identity_key),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerRecord:
        return cls(
            identity_key=_unb64(data["identity_key"]),
            verified=bool(data["verified"]),
            list_version=int(data["list_version"]),
            device_list=None if data["device_list"] is None else _unb64(data["device_list"]),
            known_devices={bytes.fromhex(d): _unb64(k) for d, k in data["known_devices"].items()},
            revoked_ms={bytes.fromhex(d): int(ms) for d, ms in data["revoked_ms"].items()},
            pending_identity_key=None
            if data["pending_identity_key"] is None
            else _unb64(data["pending_identity_key"]),
        )


@dataclass
class PendingSend:
    """An envelope sealed and recorded but not yet accepted by the server."""

    conversation: uuid.UUID
    message_id: bytes
    envelope: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation": str(self.conversation),
            "message_id": self.message_id.hex(),
            "envelope": _b64(self.envelope),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingSend:
        return cls(
            uuid.UUID(data["conversation"]),
            bytes.fromhex(data["message_id"]),
            _unb64(data["envelope"]),
        )


@dataclass
class GrantState:
    """A supervisor grant this device verified (docs/sdk.md, "Supervisor grants")."""

    record: bytes  # the therapist-signed grant, as verified
    consent: bytes | None = None  # the client's co-signature, if the grant carries one
    ended_ms: int | None = None  # when it was revoked (None: not revoked)
    announced: bool = False  # `SupervisorGranted` was handed to the application
    end_announced: bool = False  # `GrantEnded` was handed to the application

    def to_json(self) -> dict[str, Any]:
        return {
            "record": _b64(self.record),
            "consent": None if self.consent is None else _b64(self.consent),
            "ended_ms": self.ended_ms,
            "announced": self.announced,
            "end_announced": self.end_announced,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GrantState:
        return cls(
            record=_unb64(data["record"]),
            consent=None if data["consent"] is None else _unb64(data["consent"]),
            ended_ms=None if data["ended_ms"] is None else int(data["ended_ms"]),
            announced=bool(data["announced"]),
            end_announced=bool(data["end_announced"]),
        )


@dataclass
class KeystoreState:
    """Everything in the keystore, in memory."""

    device_id: uuid.UUID
    device_keys: DeviceKeys
    account: uuid.UUID | None = None
    username: str | None = None
    identity: IdentityKey | None = None  # the AIK, on the device that manages devices
    identity_public_key: bytes | None = None  # the account's AIK, on every registered device
    peers: dict[uuid.UUID, PeerRecord] = field(default_factory=dict)
    conversations: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # pinned peer
    cursor: int = 0  # last delivery sequence number the application consumed
    receive_chains: dict[tuple[uuid.UUID, uuid.UUID], ReceiveChain] = field(default_factory=dict)
    send_chains: dict[uuid.UUID, SendChain] = field(default_factory=dict)
    outbox: list[PendingSend] = field(default_factory=list)
    grants: dict[uuid.UUID, GrantState] = field(default_factory=dict)  # verified, by grant id
    supervised: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # conv -> pinned client
    history_key: bytes = field(default_factory=new_record_key)  # seals the history file
    history_bytes: int = 0  # bytes of the history file committed with this state

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "device_id": str(self.device_id),
            "device_keys": _b64(self.device_keys.to_bytes()),
            "account": None if self.account is None else str(self.account),
            "username": self.username,
            "identity": None if self.identity is None else _b64(self.identity.to_bytes()),
            "identity_public_key": None
            if self.identity_public_key is None
            else _b64(self.identity_public_key),
            "peers": {str(a): p.to_json() for a, p in self.peers.items()},
            "conversations": {str(c): str(p) for c, p in self.conversations.items()},
            "cursor": self.cursor,
            "receive_chains": [
                [str(c), str(d), chain.to_json()] for (c, d), chain in self.receive_chains.items()
            ],
            "send_chains": {str(c): chain.to_json() for c, chain in self.send_chains.items()},
            "outbox": [p.to_json() for p in self.outbox],
            "grants": {str(g): grant.to_json() for g, grant in self.grants.items()},
            "supervised": {str(c): str(a) for c, a in self.supervised.items()},
            "history_key": _b64(self.history_key),
            "history_bytes": self.history_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeystoreState:
        if data.get("format") != FORMAT:
            raise KeystoreError(f"keystore content format {data.get('format')!r} is not supported")
        identity = data["identity"]
        public = data["identity_public_key"]
        return cls(
            device_id=uuid.UUID(data["device_id"]),
            device_keys=DeviceKeys.from_bytes(_unb64(data["device_keys"])),
            account=None if data["account"] is None else uuid.UUID(data["account"]),
            username=data["username"],
            identity=None if identity is None else IdentityKey.from_bytes(_unb64(identity)),
            identity_public_key=None if public is None else _unb64(public),
            peers={uuid.UUID(a): PeerRecord.from_json(p) for a, p in data["peers"].items()},
            conversations={uuid.UUID(c): uuid.UUID(p) for c, p in data["conversations"].items()},
            cursor=int(data["cursor"]),
            receive_chains={
                (uuid.UUID(c), uuid.UUID(d)): ReceiveChain.from_json(chain)
                for c, d, chain in data["receive_chains"]
            },
            send_chains={
                uuid.UUID(c): SendChain.from_json(chain) for c, chain in data["send_chains"].items()
            },
            outbox=[PendingSend.from_json(p) for p in data["outbox"]],
            grants={
                uuid.UUID(g): GrantState.from_json(grant)
                for g, grant in data.get("grants", {}).items()
            },
            supervised={uuid.UUID(c): uuid.UUID(a) for c, a in data.get("supervised", {}).items()},
            # Keystores written before the history file existed get a new key and no history.
            history_key=_unb64(data["history_key"]) if "history_key" in data else new_record_key(),
            history_bytes=int(data.get("history_bytes", 0)),
        )


class Keystore:
    """An open keystore file. `state` is the content; `save` (or `snapshot` + `write`) stores it.

    Opening creates nothing on disk: a new keystore is written by its first `save`.
    """

    def __init__(
        self, path: Path, key: PassphraseKey, state: KeystoreState, *, exists: bool
    ) -> None:
        self.path = path
        self.state = state
        self.exists = exists
        self._key = key
        self._write_lock = threading.Lock()
        self._written = -1  # generation of the last snapshot written
        self._lock_file: IO[bytes] | None = None
        self.history = History(
            history_path(path), state.history_key, state.history_bytes, exists=exists
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], passphrase: str | bytes, *, kdf: KdfParams | None = None
    ) -> Keystore:
        """Open the keystore at `path`, or prepare a new one (with new device keys) if there is
        no file. `kdf` sets the Argon2id cost of a new keystore; an existing one keeps its own.

        Raise `WrongPassphrase`, `KeystoreTampered`, or `KeystoreError` (unreadable, or in use
        by another process).
        """
        file = Path(path)
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
        lock = _lock(file)
        try:
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                try:
                    key = PassphraseKey.derive(secret, kdf)
                except ValueError as error:
                    raise KeystoreError(str(error)) from None
                state = KeystoreState(device_id=uuid.uuid4(), device_keys=DeviceKeys.generate())
                store = cls(file, key, state, exists=False)
            except OSError as error:
                raise KeystoreError(f"cannot read keystore {file}: {error.strerror}") from error
            else:
                store = cls(file, *_unseal(file, data, secret), exists=True)
        except BaseException:
            _unlock(lock)
            raise
        store._lock_file = lock
        return store

    def snapshot(self) -> bytes:
        """The sealed bytes of the current state (call on the thread that owns `state`)."""
        plaintext = json.dumps(self.state.to_json(), separators=(",", ":")).encode("utf-8")
        return self._key.seal(plaintext)

    def write(self, sealed: bytes, generation: int | None = None) -> None:
        """Store sealed bytes atomically with mode 0600; safe to call from a worker thread.

        With `generation`, a snapshot older than one already written is skipped, so writes
        that finish out of order never go back in time.
        """
        with self._write_lock:
            if generation is not None:
                if generation < self._written:
                    return
                self._written = generation
            self.history.sync()  # the history bytes this state counts are on disk first
            _write_atomic(self.path, sealed)
        self.exists = True

    def save(self) -> None:
        self.write(self.snapshot())

    def close(self) -> None:
        self.history.close()
        _unlock(self._lock_file)
        self._lock_file = None


def _unseal(file: Path, data: bytes, secret: bytes) -> tuple[PassphraseKey, KeystoreState]:
    try:
        plaintext, key = open_sealed(data, secret)
    except PassphraseMismatch:
        raise WrongPassphrase(f"wrong passphrase for keystore {file}") from None
    except DecryptionFailed as error:
        raise KeystoreTampered(f"keystore {file} cannot be trusted: {error}") from None
    try:
        state = KeystoreState.from_json(json.loads(plaintext))
    except (ValueError, KeyError, TypeError, CryptoError) as error:
        # Authenticated but not understood: written by an incompatible version.
        raise KeystoreError(f"keystore {file} content is not understood: {error}") from None
    return key, state


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _lock(file: Path) -> IO[bytes] | None:
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(file.with_name(file.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "wb")
    except OSError as error:
        raise KeystoreError(f"cannot open keystore {file}: {error.strerror}") from error
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise KeystoreError(f"keystore {file} is in use by another client") from None
    return handle


def _unlock(handle: IO[bytes] | None) -> None:
    if handle is not None:
        handle.close()  # closing releases the flock


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
