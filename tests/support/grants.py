"""Supervisor grants as the tests make them: a therapist's signed grant, posted, and key shares."""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import Any

import httpx

from securemsg.crypto.grants import content_key_of, make_key_share, sign_grant
from tests.support.peer import Peer, b64
from tests.support.server import ServerProcess

HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def supervisor(server: ServerProcess, name: str = "sam") -> Peer:
    server.create_account(name, "supervisor")
    peer = Peer(server, name).login()
    assert peer.register().status_code == 200
    return peer


def grant_record(tess: Peer, sam: Peer, conversation: uuid.UUID, **overrides: Any) -> bytes:
    assert tess.account_id is not None and sam.account_id is not None
    fields: dict[str, Any] = dict(
        grant_id=os.urandom(16),
        conversation_id=conversation.bytes,
        therapist_account=tess.account_id.bytes,
        therapist_device=tess.device_id.bytes,
        supervisor_account=sam.account_id.bytes,
        from_ms=now_ms() - 1000,
        until_ms=now_ms() + HOUR_MS,
        include_history=True,
    )
    fields.update(overrides)
    return sign_grant(tess.device, **fields)


def post_grant(tess: Peer, conversation: uuid.UUID, record: bytes) -> httpx.Response:
    return httpx.post(
        f"{tess.server.http_url}/v1/conversations/{conversation}/grants",
        headers=tess.auth,
        json={"grant": b64(record)},
        timeout=10,
    )


def key_share(tess: Peer, sam: Peer, grant_id: uuid.UUID, item: dict[str, Any]) -> str:
    """The therapist's signed share, for `sam`'s device, of the content key of a history item."""
    raw = base64.b64decode(item["envelope"])
    key = content_key_of(raw, device_id=tess.device_id.bytes, device=tess.device)
    share = make_key_share(
        tess.device,
        grant_id=grant_id.bytes,
        therapist_device=tess.device_id.bytes,
        message_id=raw[18:34],  # the envelope's message id (docs/protocol.md, envelope layout)
        content_key=key,
        supervisor_device=sam.device_id.bytes,
        supervisor_encryption_key=sam.device.encryption_key,
    )
    return b64(share)
