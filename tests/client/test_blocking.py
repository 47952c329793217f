"""The blocking facade drives the same client from plain synchronous code."""

from __future__ import annotations

import uuid

import pytest

from securemsg.client import Message
from securemsg.client.blocking import BlockingClient
from tests.client.conftest import PASSPHRASE, Pair, fast_options
from tests.support.server import PASSWORD


def _client(pair: Pair, name: str) -> BlockingClient:
    return BlockingClient(
        pair.server.http_url,
        keystore=pair.keystore(name),
        passphrase=PASSPHRASE,
        options=fast_options(),
    )


def test_blocking_clients_exchange_a_message(pair: Pair) -> None:
    conversation = uuid.UUID(pair.conversation)
    with _client(pair, "tess") as tess, _client(pair, "carl") as carl:
        tess.login("tess", PASSWORD)
        carl.login("carl", PASSWORD)
        assert [c.id for c in carl.conversations()] == [conversation]
        sent = carl.send(conversation, "from a script")
        event = tess.next_event(timeout=10)
        while not isinstance(event, Message):
            event = tess.next_event(timeout=10)
        assert (event.text, event.message_id) == ("from a script", sent.message_id)
        with pytest.raises(TimeoutError):
            tess.next_event(timeout=0.2)
        assert (tess.username, tess.role, carl.pending_sends) == ("tess", "therapist", 0)
        assert [m.text for m in carl.history(conversation)] == ["from a script"]
        assert [d.id for d in carl.refresh_devices(tess.account)] == [tess.device_id]
        carl.logout()
        assert carl.username == "carl"  # still readable; the client is closed
        carl.close()  # a no-op after logout
