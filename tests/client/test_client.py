"""The SDK against the real server: delivery once, content types, accounts, safety numbers and
this account's own devices."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from securemsg.client import (
    AuthenticationError,
    CaughtUp,
    Client,
    ClientError,
    ConnectionLost,
    DeviceChanged,
    DeviceRevoked,
    Event,
)
from tests.client.conftest import PASSPHRASE, OpenClient, Pair, fast_options, next_message
from tests.support.server import PASSWORD, free_port


async def _quiet(client: Client, seconds: float = 0.5) -> list[Event]:
    seen: list[Event] = []
    while True:
        try:
            async with asyncio.timeout(seconds):
                event = await client.next_event()
        except TimeoutError:
            return seen
        if not isinstance(event, CaughtUp):
            seen.append(event)


async def test_consumed_messages_are_not_delivered_again_after_a_restart(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"):
        pass
    async with open_client("carl") as carl:
        for text in ("one", "two", "three"):
            await carl.send(conversation, text)
    async with open_client("tess") as tess:
        assert (await next_message(tess)).text == "one"
        assert (await next_message(tess)).text == "two"
    async with open_client("tess") as tess:
        assert (await next_message(tess)).text == "three"
        assert await _quiet(tess) == []


async def test_an_event_the_app_did_not_finish_is_delivered_again(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"):
        pass
    async with open_client("carl") as carl:
        await carl.send(conversation, "handle me")
    with pytest.raises(RuntimeError):
        async with open_client("tess") as tess:
            await next_message(tess)
            raise RuntimeError("the app crashed while handling the message")
    async with open_client("tess") as tess:
        again = await next_message(tess)
        assert again.text == "handle me"
        assert await _quiet(tess) == []


async def test_text_and_bytes_arrive_as_sent(pair: Pair, open_client: OpenClient) -> None:
    conversation = uuid.UUID(pair.conversation)
    blob = bytes(range(256)) * 40
    async with open_client("tess") as tess, open_client("carl") as carl:
        sent = await carl.send(conversation, "héllo ✓")
        await carl.send(conversation, blob)
        first, second = await next_message(tess), await next_message(tess)
    assert (first.text, first.message_id, first.counter) == ("héllo ✓", sent.message_id, 1)
    assert second.content == blob and second.counter == 2
    assert first.sender == carl.account and not first.outgoing
    with pytest.raises(TypeError):
        _ = second.text


async def test_wrong_password_is_an_authentication_error(pair: Pair) -> None:
    async with Client.connect(
        pair.server.http_url,
        keystore=pair.keystore("x"),
        passphrase=PASSPHRASE,
        options=fast_options(),
    ) as client:
        with pytest.raises(AuthenticationError):
            await client.login("carl", "not the password")
    assert not pair.keystore("x").exists()


async def test_a_keystore_belongs_to_one_account(pair: Pair, open_client: OpenClient) -> None:
    async with open_client("carl"):
        pass
    with pytest.raises(ClientError, match="another account"):
        async with open_client("tess", keystore="carl"):
            pass


async def test_both_sides_compute_the_same_safety_number_and_verify_by_qr(
    pair: Pair, open_client: OpenClient
) -> None:
    async with open_client("carl"):
        pass
    async with open_client("tess") as tess, open_client("carl") as carl:
        assert tess.account is not None and carl.account is not None
        number = tess.safety_number(carl.account)
        assert number == carl.safety_number(tess.account)
        assert len(number.digits) == 60 and len(str(number).split()) == 12
        assert not carl.is_verified(tess.account)
        await carl.verify_peer(tess.account, scanned=number.qr_payload)
        assert carl.is_verified(tess.account)
    async with open_client("carl") as carl:
        assert tess.account is not None and carl.is_verified(tess.account)


async def test_added_device_reads_along_and_a_revoked_one_is_cut_off(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"), open_client("carl"):
        pass  # carl trusts tess's list of one device
    async with Client.connect(
        pair.server.http_url,
        keystore=pair.keystore("tess-phone"),
        passphrase=PASSPHRASE,
        options=fast_options(),
    ) as phone:
        request = await phone.device_request()
        async with open_client("tess") as tess:
            approval = await tess.add_device(request.encode())
            assert {d.id for d in tess.devices()} == {tess.device_id, phone.device_id}
        await phone.accept_approval(approval.encode())
        await phone.login("tess", PASSWORD)
        tess_id = phone.account
        assert tess_id is not None

        async with open_client("carl", device_refresh_seconds=0) as carl:
            assert len(carl.devices(tess_id)) == 2
            added = [e for e in await _quiet(carl) if isinstance(e, DeviceChanged)]
            assert [(e.account, e.added, e.removed) for e in added] == [
                (tess_id, (phone.device_id,), ())
            ]
            await carl.send(conversation, "to both of tess's devices")
            assert (await next_message(phone)).text == "to both of tess's devices"
            await phone.send(conversation, "from the phone")
            assert (await next_message(carl)).text == "from the phone"
            async with open_client("tess") as tess:
                assert (await next_message(tess)).text == "to both of tess's devices"
                mine = await next_message(tess)
                assert (mine.text, mine.outgoing) == ("from the phone", True)
                await tess.revoke_device(phone.device_id)
            with pytest.raises(DeviceRevoked):
                async with asyncio.timeout(10):
                    while True:
                        await phone.next_event()
            await carl.send(conversation, "only the laptop now")
            assert [d.id for d in carl.devices(tess_id)] == [tess.device_id]
            changed = [e for e in await _quiet(carl) if isinstance(e, DeviceChanged)]
            assert changed[-1].removed == (phone.device_id,)


async def test_a_backlog_larger_than_the_queue_arrives_in_order_while_the_app_replies(
    pair: Pair, open_client: OpenClient
) -> None:
    conversation = uuid.UUID(pair.conversation)
    async with open_client("tess"):
        pass
    async with open_client("carl") as carl:
        for i in range(20):
            await carl.send(conversation, f"backlog {i}")
        async with open_client("tess", inbound_limit=4) as tess:
            texts = []
            while len(texts) < 20:
                message = await next_message(tess)
                texts.append(message.text)
                await tess.send(conversation, f"re: {message.text}")  # needs `accepted` replies
            assert texts == [f"backlog {i}" for i in range(20)]
            assert tess.reconnects > 0  # the full queue made it fetch the rest again
            assert [e for e in await _quiet(tess) if not isinstance(e, DeviceChanged)] == []
        replies = [(await next_message(carl)).text for _ in range(20)]
        assert replies == [f"re: backlog {i}" for i in range(20)]


async def _garbage_http_server(body: bytes) -> asyncio.Server:
    """Answers every request with 200 and `body` (not what a securemsg server says)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def _login_error(port: int, keystore: Path) -> ClientError:
    """What logging in against whatever answers on `port` raises."""
    async with Client.connect(
        f"http://127.0.0.1:{port}",
        keystore=keystore,
        passphrase=PASSPHRASE,
        options=fast_options(timeout_seconds=2.0),
    ) as client:
        with pytest.raises(ClientError) as raised:
            await client.login("carl", PASSWORD)
    return raised.value


@pytest.mark.parametrize("body", [b"not json", b'{"token": 5}', b"[]"])
async def test_a_server_that_is_not_securemsg_gives_client_errors_not_library_ones(
    tmp_path: Path, body: bytes
) -> None:
    server = await _garbage_http_server(body)
    try:
        error = await _login_error(server.sockets[0].getsockname()[1], tmp_path / "k.keys")
    finally:
        server.close()
    assert type(error).__module__ == "securemsg.client.errors"


async def test_an_unreachable_server_is_connection_lost(tmp_path: Path) -> None:
    error = await _login_error(free_port(), tmp_path / "k.keys")  # nothing listens there
    assert isinstance(error, ConnectionLost)
