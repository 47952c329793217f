"""A protocol-level peer for server tests: real keys, real envelopes, raw frames.

It speaks the wire protocol directly (not through the SDK) so tests can also send what a
well-behaved client never would: forged senders, stale wraps, replays.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from securemsg.crypto.devices import certify_device, sign_device_list
from securemsg.crypto.envelope import open_envelope, seal_envelope
from securemsg.crypto.keys import DeviceKeys, IdentityKey
from securemsg.protocol.devices import DeviceEntry
from securemsg.protocol.envelope import EnvelopeLimits
from securemsg.protocol.frames import ATTACH_PURPOSE
from tests.support.server import PASSWORD, ServerProcess
from tests.support.ws import open_socket, recv_json


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Peer:
    server: ServerProcess
    username: str
    password: str = PASSWORD
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    device: DeviceKeys = field(default_factory=DeviceKeys.generate)
    device_id: uuid.UUID = field(default_factory=uuid.uuid4)
    token: str = ""
    account_id: uuid.UUID | None = None
    ws: ClientConnection | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def login(self) -> Peer:
        r = httpx.post(
            self.server.http_url + "/v1/login",
            json={"username": self.username, "password": self.password},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        self.token = r.json()["token"]
        self.account_id = uuid.UUID(r.json()["account"])
        return self

    def register(
        self, version: int = 1, extra: list[tuple[uuid.UUID, DeviceKeys]] = ()
    ) -> httpx.Response:  # type: ignore[assignment]
        assert self.account_id is not None
        now = int(time.time() * 1000)
        devices = [(self.device_id, self.device), *extra]
        entries = [DeviceEntry(d.bytes, k.signing_key, k.encryption_key) for d, k in devices]
        device_list = sign_device_list(
            self.identity,
            account_id=self.account_id.bytes,
            list_version=version,
            devices=sorted(entries, key=lambda e: e.device_id),
            created_ms=now,
        )
        certs = [
            certify_device(
                self.identity,
                account_id=self.account_id.bytes,
                device_id=d.bytes,
                device=k.public_keys,
                created_ms=now,
            )
            for d, k in devices
        ]
        return httpx.put(
            self.server.http_url + "/v1/devices",
            headers=self.auth,
            timeout=10,
            json={
                "identity_key": b64(self.identity.public_key),
                "device_list": b64(device_list),
                "certificates": [b64(c) for c in certs],
            },
        )

    def conversations(self) -> list[dict[str, Any]]:
        r = httpx.get(self.server.http_url + "/v1/conversations", headers=self.auth, timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json()["conversations"])

    async def connect(self, after: int | None = None, attach: bool = True) -> dict[str, Any]:
        self.ws = await open_socket(self.server.ws_url, token=self.token)
        ready = await recv_json(self.ws)
        assert ready["type"] == "ready", ready
        if not attach:
            return ready
        challenge = base64.b64decode(ready["challenge"])
        signature = self.device.sign(ATTACH_PURPOSE, challenge + self.device_id.bytes)
        frame: dict[str, Any] = {
            "type": "attach",
            "device": str(self.device_id),
            "signature": b64(signature),
        }
        if after is not None:
            frame["after"] = after
        await self.ws.send(json.dumps(frame))
        attached = await recv_json(self.ws)
        assert attached["type"] == "attached", attached
        return attached

    def seal(
        self,
        conversation: uuid.UUID,
        recipients: dict[uuid.UUID, bytes],
        text: str,
        message_id: bytes | None = None,
        timestamp_ms: int | None = None,
        sender_device: uuid.UUID | None = None,
        sender_account: uuid.UUID | None = None,
        limits: EnvelopeLimits | None = None,
    ) -> bytes:
        assert self.account_id is not None
        return seal_envelope(
            sender=self.device,
            sender_account=(sender_account or self.account_id).bytes,
            sender_device=(sender_device or self.device_id).bytes,
            conversation_id=conversation.bytes,
            message_id=message_id or os.urandom(16),
            timestamp_ms=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            recipients={d.bytes: k for d, k in recipients.items()},
            plaintext=text.encode(),
            limits=limits,
        )

    async def send_raw(self, envelope: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": "send", "envelope": b64(envelope)}))

    async def send(self, envelope: bytes) -> dict[str, Any]:
        await self.send_raw(envelope)
        return await self.next_of("accepted", "error")

    async def next_of(self, *types: str, timeout: float = 10) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            frame = await recv_json(self.ws, timeout)
            if frame["type"] in types:
                return frame

    def open(self, envelope_b64: str, sender: Peer) -> str:
        opened = open_envelope(
            base64.b64decode(envelope_b64),
            recipient_device_id=self.device_id.bytes,
            recipient=self.device,
            sender_signing_key=sender.device.signing_key,
        )
        return opened.plaintext.decode()

    async def ack(self, seq: int) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": "ack", "seq": seq}))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None


def pair(server: ServerProcess) -> tuple[Peer, Peer, uuid.UUID]:
    """A therapist and a client, logged in, devices registered, in one conversation."""
    server.create_account("tess", "therapist")
    server.create_account("carl", "client")
    conversation = uuid.UUID(server.create_conversation("tess", "carl"))
    tess, carl = Peer(server, "tess").login(), Peer(server, "carl").login()
    for peer in (tess, carl):
        response = peer.register()
        assert response.status_code == 200, response.text
    return tess, carl, conversation
