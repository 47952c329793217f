"""The legal bundle format's pure pieces: canonical encoding, the signed note, telling it apart."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from securemsg.audit.checkpoint import Checkpoint
from securemsg.audit.errors import CheckpointError, LogMismatch
from securemsg.audit.events import canonical_json
from securemsg.audit.legal_bundle import (
    FORMAT,
    ExportedEnvelope,
    encode_body,
    encode_envelopes,
    is_legal_bundle,
    note_text,
    seal,
    verify_legal_bundle,
)
from securemsg.audit.note import NoteSigner, open_note
from securemsg.crypto.signing import SigningKey

REQUEST_ID = uuid.UUID("5d0c7f4e-0000-4000-8000-000000000001")
SIGNER = NoteSigner("legal.test/securemsg", SigningKey.from_seed(bytes(range(32))))
ENVELOPES = [
    ExportedEnvelope(
        uuid.UUID(int=7), bytes(range(16)), uuid.UUID(int=9), 1000, 1001, "message", b"\x00\xff"
    ),
    ExportedEnvelope(uuid.UUID(int=7), bytes(16), uuid.UUID(int=9), 1002, 1003, "grant", b"g"),
]
REQUEST = {
    "id": str(REQUEST_ID),
    "authority": "Tribunal de Genève — chambre pénale",
    "reference": "ref/1",
    "legal_basis": "art. 273 CPP",
    "scope": {"account": None, "conversation": str(uuid.UUID(int=7)), "from_ms": None},
    "approved_by": None,
}
AUDIT = [{"record": "checkpoint", "note": "x\n\n— y z\n", "size": 3}, {"record": "end"}]


def test_the_body_is_the_canonical_json_of_what_it_holds() -> None:
    body = encode_body(REQUEST, 1234, encode_envelopes(ENVELOPES), AUDIT)
    parsed = json.loads(body)
    assert canonical_json(parsed) == body
    assert parsed["format"] == FORMAT and parsed["exported_ms"] == 1234
    assert parsed["envelopes"][0] == {
        "conversation": str(uuid.UUID(int=7)),
        "message": bytes(range(16)).hex(),
        "sender_device": str(uuid.UUID(int=9)),
        "sent_ms": 1000,
        "received_ms": 1001,
        "size": 2,
        "kind": "message",
        "data": "AP8=",
    }
    assert encode_envelopes([]) == b"[]"


def test_the_sealed_file_is_canonical_and_its_note_signs_the_body_digest() -> None:
    body = encode_body(REQUEST, 1234, encode_envelopes(ENVELOPES), AUDIT)
    data = seal(body, REQUEST_ID, [SIGNER])
    assert data.endswith(b"}\n") and b"\n" not in data[:-1]
    document = json.loads(data)
    assert canonical_json(document) + b"\n" == data
    text = open_note(document["signature"], SIGNER.verifier)
    assert text == note_text(REQUEST_ID, hashlib.sha256(body).digest())
    # The audit key signs checkpoints too: a bundle's note can never read as one.
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)
    assert is_legal_bundle(data)
    assert not is_legal_bundle(b'{"record":"checkpoint","format":"securemsg-audit-export/1"}')
    assert not is_legal_bundle(b"record,index,time_utc")


def test_a_bundle_without_a_valid_audit_section_is_refused() -> None:
    body = encode_body(REQUEST, 1234, encode_envelopes(ENVELOPES), AUDIT)
    data = seal(body, REQUEST_ID, [SIGNER])
    with pytest.raises(LogMismatch):  # signed, but its audit section is not an audit export
        verify_legal_bundle(data, [SIGNER.verifier])
    for broken in (b"not json", b"[]", b'{"bundle":{},"signature":""}'):
        with pytest.raises(LogMismatch):
            verify_legal_bundle(broken, [SIGNER.verifier])
