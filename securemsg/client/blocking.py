"""A blocking facade for scripts and notebooks: the async `Client` on one background loop thread.

Every method submits the matching coroutine to that loop and waits for its result, so behaviour
(reconnects, retries, acknowledgements) is exactly the async client's. Use it as a context
manager, or call `close()`:

    with BlockingClient("http://127.0.0.1:8443", keystore="me.keys", passphrase=pw) as client:
        client.login("carl", password)
        client.send(client.conversations()[0].id, "hello")
        print(client.next_event(timeout=10))
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from securemsg.client.client import Client, ClientOptions, DeviceInfo
from securemsg.client.conversations import Conversation
from securemsg.client.devices import DeviceApproval, DeviceRequest
from securemsg.client.disclosures import Disclosure
from securemsg.client.events import AccountId, DeviceId, Event, GrantInfo, Message
from securemsg.client.outbox import Sent
from securemsg.crypto.safety import SafetyNumber

T = TypeVar("T")


class BlockingClient:
    def __init__(
        self,
        url: str,
        *,
        keystore: str | os.PathLike[str],
        passphrase: str | bytes,
        options: ClientOptions | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="securemsg-client", daemon=True
        )
        self._thread.start()

        async def open_client() -> Client:
            return await Client.connect(
                url, keystore=keystore, passphrase=passphrase, options=options
            )

        try:
            self._client = self._run(open_client())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    # -- the async client's methods, blocking -------------------------------------------------

    def login(self, username: str, password: str) -> None:
        self._run(self._client.login(username, password))

    def send(self, conversation: uuid.UUID, content: str | bytes) -> Sent:
        return self._run(self._client.send(conversation, content))

    def next_event(self, timeout: float | None = None) -> Event:
        """The next event; raise `TimeoutError` if none comes within `timeout` seconds."""

        async def wait() -> Event:
            async with asyncio.timeout(timeout):
                return await self._client.next_event()

        return self._run(wait())

    def events(self) -> Iterator[Event]:
        while True:
            yield self.next_event()

    def conversations(self) -> list[Conversation]:
        return self._client.conversations()

    def refresh_conversations(self) -> list[Conversation]:
        return self._run(self._client.refresh_conversations())

    def safety_number(self, account: uuid.UUID) -> SafetyNumber:
        return self._client.safety_number(account)

    def verify_peer(self, account: uuid.UUID, *, scanned: bytes | None = None) -> None:
        self._run(self._client.verify_peer(account, scanned=scanned))

    def accept_identity_change(self, account: uuid.UUID) -> None:
        self._run(self._client.accept_identity_change(account))

    def is_verified(self, account: uuid.UUID) -> bool:
        return self._client.is_verified(account)

    def devices(self, account: uuid.UUID | None = None) -> list[DeviceInfo]:
        return self._client.devices(account)

    def refresh_devices(self, account: uuid.UUID) -> list[DeviceInfo]:
        return self._run(self._client.refresh_devices(account))

    def device_request(self) -> DeviceRequest:
        return self._run(self._client.device_request())

    def accept_approval(self, approval: DeviceApproval | str) -> None:
        self._run(self._client.accept_approval(approval))

    def add_device(self, request: DeviceRequest | str) -> DeviceApproval:
        return self._run(self._client.add_device(request))

    def revoke_device(self, device_id: uuid.UUID) -> None:
        self._run(self._client.revoke_device(device_id))

    def grant_supervisor(
        self,
        conversation: uuid.UUID,
        supervisor: uuid.UUID,
        *,
        until_ms: int,
        from_ms: int | None = None,
        include_history: bool = False,
    ) -> GrantInfo:
        return self._run(
            self._client.grant_supervisor(
                conversation,
                supervisor,
                until_ms=until_ms,
                from_ms=from_ms,
                include_history=include_history,
            )
        )

    def revoke_grant(self, grant_id: uuid.UUID) -> GrantInfo | None:
        return self._run(self._client.revoke_grant(grant_id))

    def grants(self, conversation: uuid.UUID) -> list[GrantInfo]:
        return self._run(self._client.grants(conversation))

    def share_history(self, grant_id: uuid.UUID) -> int:
        return self._run(self._client.share_history(grant_id))

    def history(self, conversation: uuid.UUID) -> list[Message]:
        return self._run(self._client.history(conversation))

    def disclosures(self) -> list[Disclosure]:
        return self._run(self._client.disclosures())

    @property
    def account(self) -> AccountId | None:
        return self._client.account

    @property
    def device_id(self) -> DeviceId:
        return self._client.device_id

    @property
    def username(self) -> str | None:
        return self._client.username

    @property
    def role(self) -> str | None:
        return self._client.role

    @property
    def reconnects(self) -> int:
        return self._client.reconnects

    @property
    def pending_sends(self) -> int:
        return self._client.pending_sends

    # -- lifecycle ----------------------------------------------------------------------------

    def logout(self) -> None:
        """End the server session and close the client."""
        if not self._thread.is_alive():
            return
        try:
            self._run(self._client.logout())
        finally:
            self._stop_loop()

    def close(self, *, consumed: bool = True) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._client.close(consumed=consumed))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(consumed=exc_type is None)
