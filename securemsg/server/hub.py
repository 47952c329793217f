"""The registry of this process's open sockets: by address, account, session and device.

It enforces the per-address cap on unauthenticated sockets, the per-account socket cap and the
one-live-socket-per-device rule, and routes freshly committed deliveries to attached sockets.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterable
from typing import Protocol

from securemsg.protocol.errors import CloseCode, ErrorCode


class Socket(Protocol):
    account_id: uuid.UUID | None
    session_id: uuid.UUID | None
    device_id: uuid.UUID | None

    def close_soon(self, code: CloseCode, error: ErrorCode, message: str) -> None: ...

    def offer(self, seq: int, data: bytes, kind: str) -> None: ...

    def wake(self) -> None: ...


class Hub:
    def __init__(self) -> None:
        self._unauthenticated: collections.Counter[str] = collections.Counter()
        self._by_account: dict[uuid.UUID, set[Socket]] = {}
        self._by_device: dict[uuid.UUID, Socket] = {}

    def open_unauthenticated(self, address: str, limit: int) -> bool:
        if self._unauthenticated[address] >= limit:
            return False
        self._unauthenticated[address] += 1
        return True

    def release_unauthenticated(self, address: str) -> None:
        self._unauthenticated[address] -= 1
        if self._unauthenticated[address] <= 0:
            del self._unauthenticated[address]

    def unauthenticated(self, address: str) -> int:
        return self._unauthenticated[address]

    def add_authenticated(self, socket: Socket, account_id: uuid.UUID, limit: int) -> bool:
        sockets = self._by_account.setdefault(account_id, set())
        if len(sockets) >= limit:
            if not sockets:
                del self._by_account[account_id]
            return False
        sockets.add(socket)
        return True

    def attach(self, socket: Socket, device_id: uuid.UUID) -> None:
        """Make `socket` the device's live socket, displacing any older one."""
        old = self._by_device.get(device_id)
        self._by_device[device_id] = socket
        if old is not None and old is not socket:
            old.close_soon(
                CloseCode.DISPLACED,
                ErrorCode.DISPLACED,
                "a newer connection of this device took over",
            )

    def remove(self, socket: Socket) -> None:
        if socket.account_id is not None:
            sockets = self._by_account.get(socket.account_id)
            if sockets is not None:
                sockets.discard(socket)
                if not sockets:
                    del self._by_account[socket.account_id]
        if socket.device_id is not None and self._by_device.get(socket.device_id) is socket:
            del self._by_device[socket.device_id]

    def sockets(self) -> list[Socket]:
        return [s for group in self._by_account.values() for s in group]

    def count(self) -> int:
        return sum(len(group) for group in self._by_account.values())

    def of_account(self, account_id: uuid.UUID) -> list[Socket]:
        return list(self._by_account.get(account_id, ()))

    def deliver(self, pushes: Iterable[tuple[uuid.UUID, int, bytes, str]]) -> None:
        """Hand committed (device, seq, data, kind) deliveries to attached sockets, in order."""
        for device_id, seq, data, kind in pushes:
            socket = self._by_device.get(device_id)
            if socket is not None:
                socket.offer(seq, data, kind)

    def wake_devices(self, device_ids: Iterable[uuid.UUID]) -> None:
        """Something new was committed elsewhere for these devices: re-read their queues."""
        for device_id in device_ids:
            socket = self._by_device.get(device_id)
            if socket is not None:
                socket.wake()
