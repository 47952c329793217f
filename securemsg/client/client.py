"""`Client`: the SDK's one entry point, wiring keystore, HTTP API, socket, inbox and outbox.

    async with Client.connect("https://chat.example", keystore="me.keys", passphrase=pw) as c:
        await c.login("alice", password)
        async for event in c.events():
            if isinstance(event, Message):
                await c.send(event.conversation, "got it")

An event counts as consumed when the application asks for the next one (or leaves the `async
with` block without an exception); only then do the cursor and the message chains advance, the
keystore is saved, and the delivery is acknowledged to the server. docs/sdk.md is the guide.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from securemsg.client import devices as own_devices
from securemsg.client.chain import SendChain
from securemsg.client.connection import Connection, ConnectionOptions
from securemsg.client.conversations import Conversation, ConversationBook
from securemsg.client.devices import DeviceApproval, DeviceRequest
from securemsg.client.disclosures import Disclosure
from securemsg.client.errors import (
    AuthenticationError,
    ClientClosed,
    ClientError,
    ConnectionLost,
    PeerKeyChanged,
    PeerUnavailable,
    RequestFailed,
    SendRefused,
    VerificationFailed,
)
from securemsg.client.events import (
    AccountId,
    CaughtUp,
    ConversationId,
    DeviceId,
    Event,
    Gap,
    GrantInfo,
    GrantRejected,
    Message,
    MessageId,
    Undecryptable,
)
from securemsg.client.grants import GrantBook, now_ms
from securemsg.client.http import Api, HistoryItem, Session
from securemsg.client.inbox import Delivery, Inbound, Inbox, Processed, Terminal
from securemsg.client.keystore import Keystore, PeerRecord, PendingSend
from securemsg.client.outbox import Outbox, Sent
from securemsg.client.payload import (
    NO_PREVIOUS,
    Payload,
    PayloadError,
    chain_hash,
    decode_payload,
    encode_payload,
)
from securemsg.client.peers import Peers
from securemsg.client.persistence import StateWriter
from securemsg.crypto.envelope import seal_envelope
from securemsg.crypto.errors import CryptoError, DecryptionFailed
from securemsg.crypto.grants import (
    content_key_of,
    make_key_share,
    open_shared,
    sign_grant,
    verify_key_share,
)
from securemsg.crypto.keystore import KdfParams
from securemsg.crypto.safety import SafetyNumber, SafetyNumberMismatch, safety_number
from securemsg.protocol.devices import DeviceEntry
from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope
from securemsg.protocol.errors import EnvelopeError
from securemsg.protocol.grants import GrantError, KeyShare, parse_key_share

MESSAGE_ID_BYTES = 16
KEY_SHARES_PER_REQUEST = 500  # below the server's max_key_shares_per_request (1000)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Tuning knobs; the defaults suit an app talking to a server with default settings."""

    timeout_seconds: float = 10.0  # HTTP requests, WebSocket opening, login's wait to attach
    reconnect_initial_seconds: float = 0.2
    reconnect_max_seconds: float = 30.0
    reply_timeout_seconds: float = 30.0
    keepalive_seconds: float = 60.0
    device_refresh_seconds: float = 60.0  # how long a fetched device list is used before a send
    send_rate_per_second: float = 100.0  # stay below the server's send_rate_per_second (200)
    send_burst: int = 100
    send_window: int = 128  # sends awaiting `accepted` at once
    inbound_limit: int = 1024  # deliveries received but not yet consumed
    websocket_url: str | None = None  # default: the server URL with ws(s):// and /v1/ws
    kdf: KdfParams | None = None  # Argon2id cost for a new keystore (default KdfParams())
    limits: EnvelopeLimits = field(default_factory=EnvelopeLimits)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device on an account's verified device list."""

    id: DeviceId
    this_device: bool


class Client:
    """An end-to-end encrypted messaging client for one device. Create it with `connect`."""

    def __init__(self, url: str, keystore: Keystore, options: ClientOptions) -> None:
        self.options = options
        self._keystore = keystore
        self._state = keystore.state
        self._api = Api(url, timeout_seconds=options.timeout_seconds)
        self._ws_url = options.websocket_url or _websocket_url(url)
        self._inbound = Inbound(options.inbound_limit)
        self._writer = StateWriter(keystore, on_saved=self._on_saved)
        self._peers = Peers(
            self._state,
            self._api,
            refresh_seconds=options.device_refresh_seconds,
            notify=self._inbound.put,
            on_change=self._writer.mark,
        )
        self._conversations = ConversationBook(self._state, self._api, on_change=self._writer.mark)
        self._grants = GrantBook(
            self._state,
            self._peers,
            self._api,
            self._conversations.lookup,
            notify=self._inbound.put,
            on_change=self._writer.mark,
        )
        self._inbox = Inbox(
            self._state,
            self._peers,
            self._conversations.lookup,
            limits=options.limits,
            grants=self._grants,
        )
        self._grant_watch: asyncio.Task[None] | None = None
        self._outbox = Outbox(
            self._state,
            self._writer,
            rate_per_second=options.send_rate_per_second,
            burst=options.send_burst,
            window=options.send_window,
            notify=self._inbound.put,
            resealer=self._reseal,
        )
        self._connection: Connection | None = None
        self._connection_task: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self._send_lock = asyncio.Lock()
        self._consume_lock = asyncio.Lock()
        self._current: Processed | None = None
        self._unread: collections.deque[Event] = collections.deque()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        keystore: str | os.PathLike[str],
        passphrase: str | bytes,
        options: ClientOptions | None = None,
    ) -> _Opening:
        """Open (or create) the keystore and return the client; use `async with` or `await`.

        `url` is the server's base URL (`https://host:port`). Raises `WrongPassphrase`,
        `KeystoreTampered` or `KeystoreError`.
        """
        chosen = options or ClientOptions()

        async def open_client() -> Client:
            store = await asyncio.to_thread(Keystore.open, keystore, passphrase, kdf=chosen.kdf)
            return cls(url, store, chosen)

        return _Opening(open_client)

    async def login(self, username: str, password: str) -> None:
        """Log in, register this device on first use, and attach the socket.

        Returns once the socket is attached (or after `timeout_seconds` while it keeps trying).
        Raises `AuthenticationError`, `ConnectionLost`, `DeviceRevoked` or `ClientError`.
        """
        self._check_open()
        if self._session is not None:
            raise ClientError("already logged in")
        session = await self._api.login(username, password)
        state = self._state
        if state.account is None:
            state.account = session.account
        elif state.account != session.account:
            raise ClientError(f"keystore {self._keystore.path} belongs to another account")
        state.username = session.username
        await own_devices.register(state, self._api, save=self._save_now)
        await self.refresh_conversations()
        for account in {session.account, *(c.peer.account for c in self.conversations())}:
            await self._peers.refresh(account)
        self._session = session
        await self._sync_grants()
        self._writer.start()
        self._grant_watch = asyncio.create_task(self._grants.watch(), name="sdk-grant-expiry")
        self._connection = Connection(
            self._ws_url,
            token=lambda: self._api.token,
            state=state,
            device_keys=state.device_keys,
            inbound=self._inbound,
            outbox=self._outbox,
            options=ConnectionOptions(
                open_timeout_seconds=self.options.timeout_seconds,
                reconnect_initial_seconds=self.options.reconnect_initial_seconds,
                reconnect_max_seconds=self.options.reconnect_max_seconds,
                reply_timeout_seconds=self.options.reply_timeout_seconds,
                keepalive_seconds=self.options.keepalive_seconds,
            ),
        )
        task = asyncio.create_task(self._connection.run(), name="sdk-connection")
        self._connection_task = task
        attached = asyncio.ensure_future(self._connection.attached.wait())
        await asyncio.wait(
            {attached, task},
            timeout=self.options.timeout_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        attached.cancel()
        if self._connection.error is not None:
            raise self._connection.error

    async def close(self, *, consumed: bool = True) -> None:
        """Stop the connection and save the keystore. With `consumed`, the last event handed out
        counts as handled (leaving `async with` normally); otherwise it is delivered again."""
        if self._closed:
            return
        self._closed = True
        if consumed and self._current is not None and not self._unread:
            self._commit_current()
        if self._grant_watch is not None:
            self._grant_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._grant_watch
        if self._connection is not None:
            await self._connection.close()
        if self._connection_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._connection_task), timeout=2)
            self._connection_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection_task
        self._outbox.fail_waiting(ClientClosed("the client was closed"))
        if self._state.account is not None:
            await self._writer.close()
        await self._api.close()
        self._keystore.close()

    async def logout(self) -> None:
        """End the server session and close the client."""
        with contextlib.suppress(ClientError):
            await self._api.logout()
        await self.close()

    # -- who and where ------------------------------------------------------------------------

    @property
    def account(self) -> AccountId | None:
        return None if self._state.account is None else AccountId(self._state.account)

    @property
    def username(self) -> str | None:
        return self._state.username

    @property
    def role(self) -> str | None:
        return None if self._session is None else self._session.role

    @property
    def device_id(self) -> DeviceId:
        return DeviceId(self._state.device_id)

    @property
    def reconnects(self) -> int:
        """How many times the socket was lost and opened again since login."""
        return 0 if self._connection is None else self._connection.reconnects

    @property
    def pending_sends(self) -> int:
        """Messages recorded but not yet accepted by the server (retried on reconnect)."""
        return len(self._outbox)

    def conversations(self) -> list[Conversation]:
        """The conversations this account reads, as of the last refresh."""
        return self._conversations.all()

    async def refresh_conversations(self) -> list[Conversation]:
        """Fetch the conversations again (a message in a new one also triggers this)."""
        return await self._conversations.refresh()

    async def disclosures(self) -> list[Disclosure]:
        """This account's accounting of disclosures: each legal export that covered it, once
        its notice delay is over (docs/legal-requests.md). Newest first."""
        self._check_open()
        return await self._api.disclosures()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, conversation: uuid.UUID, content: str | bytes) -> Sent:
        """Encrypt `content` to the conversation's two readers' verified devices and send it.

        Returns once the server durably stored it. Survives reconnects (the same envelope is
        retried). Raises `PeerKeyChanged`, `PeerUnavailable`, `SendRefused`, `ClientClosed`.
        """
        self._check_open()
        if self._session is None:
            raise ClientError("log in before sending")
        if self._session.role == "supervisor":
            raise ClientError("a supervisor reads conversations under a grant and cannot send")
        if not isinstance(content, str | bytes):
            raise TypeError("content must be str or bytes")
        async with self._send_lock:
            found = await self._conversations.lookup(conversation)
            if found is None:
                raise ClientError(f"conversation {conversation} is not one this account reads")
            chain = self._state.send_chains.get(found.id, SendChain())
            payload = encode_payload(
                Payload(
                    chain.counter + 1,
                    chain.last_hash if chain.counter else NO_PREVIOUS,
                    content,
                )
            )
            message_id = os.urandom(MESSAGE_ID_BYTES)
            sent_ms = now_ms()
            envelope = await self._seal(found, message_id, payload, sent_ms, refresh=False)
            self._record(  # first: if the history cannot be written, nothing is sent
                Message(
                    conversation=ConversationId(found.id),
                    message_id=MessageId(message_id.hex()),
                    sender=AccountId(found.me.account),
                    sender_device=DeviceId(self._state.device_id),
                    sent_ms=sent_ms,
                    counter=chain.counter + 1,
                    content=content,
                    outgoing=True,
                    seq=0,
                )
            )
            self._state.send_chains[found.id] = SendChain(
                chain.counter + 1,
                chain_hash(
                    conversation_id=found.id.bytes,
                    message_id=message_id,
                    sender_device=self._state.device_id.bytes,
                    payload=payload,
                ),
            )
            future = self._outbox.add(PendingSend(found.id, message_id, envelope), payload)
        return await future

    async def _seal(
        self,
        conversation: Conversation,
        message_id: bytes,
        payload: bytes,
        sent_ms: int,
        *,
        refresh: bool,
    ) -> bytes:
        me, peer = conversation.me.account, conversation.peer.account
        for account in (peer, me):
            if refresh:
                await self._peers.refresh(account)
            else:
                await self._peers.ensure_fresh(account)
        self._peers.check_sendable(peer)
        if not self._peers.devices(peer):
            raise PeerUnavailable(f"{conversation.peer.username} has no verified device")
        recipients = {**self._peers.devices(peer), **self._peers.devices(me)}
        recipients.update(await self._supervisor_devices(conversation.id, refresh=refresh))
        # This device is a recipient too: the server never delivers an envelope back to its
        # sending device, but the wrap lets this device open its own messages later (to share
        # them with a supervisor, `share_history`).
        recipients[self._state.device_id.bytes] = self._state.device_keys.encryption_key
        assert self._state.account is not None
        try:
            return seal_envelope(
                sender=self._state.device_keys,
                sender_account=self._state.account.bytes,
                sender_device=self._state.device_id.bytes,
                conversation_id=conversation.id.bytes,
                message_id=message_id,
                timestamp_ms=sent_ms,
                recipients=recipients,
                plaintext=payload,
                limits=self.options.limits,
            )
        except EnvelopeError as error:
            raise SendRefused(str(error), code=error.code) from None

    async def _supervisor_devices(
        self, conversation: uuid.UUID, *, refresh: bool
    ) -> dict[bytes, bytes]:
        """The verified devices of the supervisors named by this conversation's verified grants
        in force: the only readers ever added to the client and the therapist."""
        excluded: set[uuid.UUID] = set()
        if refresh:  # the server refused a send: perhaps a grant ended that we did not hear of
            with contextlib.suppress(ClientError):
                _, excluded = await self._grants.refresh(conversation)
        devices: dict[bytes, bytes] = {}
        for supervisor in self._grants.supervisors_in_force(
            conversation, now_ms(), excluding=excluded
        ):
            try:
                if refresh:
                    await self._peers.refresh(supervisor)
                else:
                    await self._peers.ensure_fresh(supervisor)
            except (RequestFailed, ConnectionLost):
                pass  # the list already trusted, if any, is used
            record = self._peers.record(supervisor)
            if record is None or record.pending_identity_key is not None:
                continue  # never wrap to devices under an identity key not accepted
            devices.update(self._peers.devices(supervisor))
        return devices

    async def _reseal(self, conversation_id: uuid.UUID, message_id: bytes, payload: bytes) -> bytes:
        found = await self._conversations.lookup(conversation_id)
        if found is None:
            raise ClientError(f"conversation {conversation_id} is no longer readable")
        return await self._seal(found, message_id, payload, now_ms(), refresh=True)

    # -- receiving ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, forever (until the client closes or the session ends)."""
        while True:
            try:
                event = await self.next_event()
            except ClientClosed:
                return
            yield event

    async def next_event(self) -> Event:
        """The next event. Asking for it marks the previous one consumed (see module doc).

        Wrap it in `asyncio.timeout` to wait a bounded time. Raises the connection's final error
        (`AuthenticationError`, `DeviceRevoked`, `Displaced`) once everything before it was read.
        """
        self._check_open()
        async with self._consume_lock:
            while True:
                if self._unread:
                    event = self._unread[0]
                    if isinstance(event, Message):
                        self._record(event)  # in the order the application saw it
                    return self._unread.popleft()  # only once recorded: a failed write loses none
                if self._current is not None:
                    self._commit_current()
                item = await self._inbound.get()
                if isinstance(item, Terminal):
                    self._inbound.put(item)  # keep raising it
                    raise item.error
                if isinstance(item, Delivery | Gap | CaughtUp):
                    self._current = await self._inbox.process(item)
                    self._unread.extend(self._current.events)
                    continue
                return item

    def _commit_current(self) -> None:
        """The application consumed the current delivery's events: advance the cursor and the
        chains, and schedule the keystore save."""
        assert self._current is not None
        self._current.commit(self._state)
        self._current = None
        self._writer.mark()

    def _record(self, message: Message) -> None:
        """Append to this device's history (participants: a supervisor's history is the
        therapist's to share, and stays on the server)."""
        if self._session is not None and self._session.role == "supervisor":
            return
        self._state.history_bytes = self._keystore.history.append(message)

    async def _on_saved(self, cursor: int) -> None:
        if self._connection is not None:
            await self._connection.ack(cursor)

    async def _save_now(self) -> None:
        await self._writer.durable(self._writer.mark())

    # -- supervisor grants (docs/confidentiality.md) -------------------------------------------

    async def grant_supervisor(
        self,
        conversation: uuid.UUID,
        supervisor: uuid.UUID,
        *,
        until_ms: int,
        from_ms: int | None = None,
        include_history: bool = False,
    ) -> GrantInfo:
        """As the conversation's therapist: let `supervisor` (an account id) read it from
        `from_ms` (default: now) until `until_ms`, signed by this device. Every participant's
        app is told (`SupervisorGranted`); new messages are also encrypted to the supervisor's
        verified devices while it is in force. With `include_history`, `share_history` can then
        give the supervisor the earlier messages. Raises `RequestFailed` if the server refuses."""
        self._check_open()
        found = await self._participant_conversation(conversation)
        if found.me.role != "therapist":
            raise ClientError("only the conversation's therapist can grant a supervisor access")
        if supervisor in (found.me.account, found.peer.account):
            raise ClientError("a participant of the conversation cannot be its supervisor")
        start = now_ms() if from_ms is None else from_ms
        if not 0 <= start < until_ms:
            raise ClientError("a grant must end after it starts")
        assert self._state.account is not None
        record = sign_grant(
            self._state.device_keys,
            grant_id=uuid.uuid4().bytes,
            conversation_id=found.id.bytes,
            therapist_account=self._state.account.bytes,
            therapist_device=self._state.device_id.bytes,
            supervisor_account=supervisor.bytes,
            from_ms=start,
            until_ms=until_ms,
            include_history=include_history,
        )
        await self._api.create_grant(found.id, record, None)
        info = self._grants.remember(record, None)
        await self._save_now()
        return info

    async def revoke_grant(self, grant_id: uuid.UUID) -> GrantInfo | None:
        """End a grant now (its therapist or the conversation's client). Every participant's
        app sees `GrantEnded`; new messages are no longer encrypted to the supervisor. Returns
        the grant if this device had verified it."""
        self._check_open()
        listing = await self._api.revoke_grant(grant_id)
        if self._grants.info(grant_id) is None:
            with contextlib.suppress(ClientError):
                await self._grants.refresh(listing.conversation)
        info = self._grants.revoked(grant_id, listing.revoked_ms or now_ms())
        await self._save_now()
        return info

    async def grants(self, conversation: uuid.UUID) -> list[GrantInfo]:
        """The conversation's grants as the server lists them, each verified on this device
        (one that does not verify is left out and reported as `GrantRejected`); ended ones
        included. A supervisor sees the grants that name it."""
        self._check_open()
        verified, _ = await self._grants.refresh(conversation)
        return verified

    async def share_history(self, grant_id: uuid.UUID) -> int:
        """As the grant's therapist: give the supervisor the conversation's earlier messages.

        For every stored message this device can open, its content key is sealed to each of
        the supervisor's verified devices and signed by this device (key shares). The supervisor
        still checks each original sender's signature. Returns how many messages were shared.
        """
        self._check_open()
        grant = self._grants.info(grant_id)
        if grant is None:
            raise ClientError(f"grant {grant_id} is not one this device verified")
        if grant.therapist != self._state.account:
            raise ClientError("only the therapist who granted access can share history")
        if not grant.include_history or not grant.in_force(now_ms()):
            raise ClientError("the grant is not in force or does not include history")
        await self._peers.refresh(grant.supervisor)
        self._peers.check_sendable(grant.supervisor)
        targets = self._peers.devices(grant.supervisor)
        if not targets:
            raise PeerUnavailable("the supervisor has no verified device")
        shares: list[bytes] = []
        shared = 0
        for item in await self._history_items(grant.conversation):
            if item.kind != "message":
                continue
            try:
                key = content_key_of(
                    item.envelope,
                    device_id=self._state.device_id.bytes,
                    device=self._state.device_keys,
                )
                envelope = parse_envelope(item.envelope, self.options.limits)
            except (DecryptionFailed, EnvelopeError):
                continue  # not wrapped to this device (e.g. stored before it existed)
            if envelope.conversation_id != grant.conversation.bytes:
                continue
            shared += 1
            for device, encryption_key in targets.items():
                shares.append(
                    make_key_share(
                        self._state.device_keys,
                        grant_id=grant.id.bytes,
                        therapist_device=self._state.device_id.bytes,
                        message_id=envelope.message_id,
                        content_key=key,
                        supervisor_device=device,
                        supervisor_encryption_key=encryption_key,
                    )
                )
        for start in range(0, len(shares), KEY_SHARES_PER_REQUEST):
            await self._api.add_key_shares(grant.id, shares[start : start + KEY_SHARES_PER_REQUEST])
        return shared

    async def history(self, conversation: uuid.UUID) -> list[Message]:
        """The conversation's messages, oldest first.

        For a participant (client or therapist): from this device's own history file (the server
        keeps none): every message handed to the application here and every message sent from
        here (`outgoing`, `seq` 0; recorded when sent), since the device started keeping history.
        Raises `HistoryTampered` if
        the file was changed.

        For a supervisor, under a verified grant in force that includes history: the messages the
        therapist shared, each opened with a key share signed by the therapist's device and
        checked against its original sender's signature. Envelopes that fail a check are left
        out and reported as `Undecryptable` events. Without a grant in force the server refuses
        (`RequestFailed`, code `no_grant`) and records the attempt."""
        self._check_open()
        if self._session is None:
            raise ClientError("log in first")
        if self._session.role != "supervisor":
            return await asyncio.to_thread(self._keystore.history.read, conversation)
        with contextlib.suppress(RequestFailed):
            await self._grants.refresh(conversation)  # learn of revocations first
        items = await self._history_items(conversation)  # refused without a grant in force
        granted = self._grants.supervising(conversation, now_ms(), history=True)
        shares: dict[bytes, tuple[KeyShare, uuid.UUID]] = {}
        for grant in granted:
            for raw in await self._api.key_shares(grant.id, self._state.device_id):
                share = await self._verified_share(raw, grant)
                if share is not None:
                    shares[share.message_id] = (share, grant.therapist)
        messages: list[Message] = []
        for item in items:
            if item.kind != "message":
                continue
            found = shares.get(_message_id_of(item.envelope, self.options.limits))
            if found is not None:
                opened = await self._open_shared(conversation, item, found[0])
                if opened is not None:
                    messages.append(opened)
        return messages

    async def _participant_conversation(self, conversation: uuid.UUID) -> Conversation:
        if self._session is None:
            raise ClientError("log in first")
        found = await self._conversations.lookup(conversation)
        if found is None:
            raise ClientError(f"conversation {conversation} is not one this account reads")
        return found

    async def _sync_grants(self) -> None:
        """At login: learn every grant of this account's conversations (and, as a supervisor,
        of the ones it supervises), verified, so the app is never unaware of an active one."""
        wanted = {c.id for c in self.conversations()} | self._grants.supervised_conversations()
        for conversation in sorted(wanted):
            try:
                await self._grants.refresh(conversation)
            except (ConnectionLost, AuthenticationError):
                raise
            except ClientError as error:  # refused or malformed: say so, keep logging in
                self._inbound.put(
                    GrantRejected(
                        f"the server's grants listing could not be checked: {error}",
                        ConversationId(conversation),
                    )
                )

    async def _history_items(self, conversation: uuid.UUID) -> list[HistoryItem]:
        items: list[HistoryItem] = []
        while True:
            page = await self._api.history(conversation, after=items[-1].id if items else 0)
            if not page:
                return items
            if items and page[0].id <= items[-1].id:
                raise ClientError("the server's history pages go backwards")
            items.extend(page)

    async def _verified_share(self, raw: bytes, grant: GrantInfo) -> KeyShare | None:
        def refused(reason: str) -> KeyShare | None:
            self._inbound.put(Undecryptable(0, f"key share refused: {reason}", grant.conversation))
            return None

        try:
            share = parse_key_share(raw)
        except GrantError as error:
            return refused(str(error))
        if (
            share.grant_id != grant.id.bytes
            or share.supervisor_device != self._state.device_id.bytes
        ):
            return refused("it is for another grant or device")
        key = self._peers.current_signing_key(grant.therapist, share.therapist_device)
        if key is None:
            with contextlib.suppress(RequestFailed):
                await self._peers.refresh(grant.therapist)
            key = self._peers.current_signing_key(grant.therapist, share.therapist_device)
        try:
            if key is None:
                raise CryptoError("its signing device is not on the therapist's verified list")
            return verify_key_share(raw, key)
        except CryptoError as error:
            return refused(str(error))

    async def _open_shared(
        self, conversation: uuid.UUID, item: HistoryItem, share: KeyShare
    ) -> Message | None:
        try:
            envelope = parse_envelope(item.envelope, self.options.limits)
        except EnvelopeError as error:
            self._inbound.put(Undecryptable(0, f"malformed history envelope: {error}"))
            return None
        sender = AccountId(uuid.UUID(bytes=envelope.sender_account))
        device = DeviceId(uuid.UUID(bytes=envelope.sender_device))
        message_id = MessageId(envelope.message_id.hex())

        def refuse(reason: str) -> Message | None:
            self._inbound.put(
                Undecryptable(0, reason, ConversationId(conversation), sender, device, message_id)
            )
            return None

        if envelope.conversation_id != conversation.bytes:
            return refuse("history envelope is from another conversation")
        refusal = self._grants.admit_supervised(conversation, sender)
        if refusal is not None:
            return refuse(refusal)
        signing_key = self._peers.signing_key(sender, envelope.sender_device, envelope.timestamp_ms)
        if signing_key is None:
            with contextlib.suppress(RequestFailed):
                await self._peers.refresh(sender)
            signing_key = self._peers.signing_key(
                sender, envelope.sender_device, envelope.timestamp_ms
            )
        if signing_key is None:
            return refuse("sender device is not on the sender's verified device list")
        try:
            opened = open_shared(
                item.envelope,
                share,
                supervisor=self._state.device_keys,
                sender_signing_key=signing_key,
            )
            payload = decode_payload(opened.plaintext)
        except (CryptoError, PayloadError) as error:
            return refuse(str(error))
        return Message(
            conversation=ConversationId(conversation),
            message_id=message_id,
            sender=sender,
            sender_device=device,
            sent_ms=envelope.timestamp_ms,
            counter=payload.counter,
            content=payload.content,
            outgoing=False,
            seq=0,
        )

    # -- trust --------------------------------------------------------------------------------

    def safety_number(self, account: uuid.UUID) -> SafetyNumber:
        """The safety number of this account and `account` (digits and QR payload), for the
        identity key that `verify_peer` would pin (a pending new key, if there is one)."""
        record = self._peer_record(account)
        assert self._state.account is not None and self._state.identity_public_key is not None
        return safety_number(
            local_account=self._state.account.bytes,
            local_identity_key=self._state.identity_public_key,
            remote_account=account.bytes,
            remote_identity_key=record.pending_identity_key or record.identity_key,
        )

    async def verify_peer(self, account: uuid.UUID, *, scanned: bytes | None = None) -> None:
        """Mark the peer verified (after comparing safety numbers, or with the QR payload
        scanned from the peer's screen). Pins a pending new identity key."""
        number = self.safety_number(account)
        if scanned is not None:
            try:
                number.check_scanned(scanned)
            except SafetyNumberMismatch as error:
                raise VerificationFailed(str(error)) from None
        self._peers.accept_pending(account, verified=True)
        await self._peers.refresh(account)
        await self._save_now()

    async def accept_identity_change(self, account: uuid.UUID) -> None:
        """Trust an unverified peer's new identity key (sends to them resume)."""
        record = self._peer_record(account)
        if record.verified and record.pending_identity_key is not None:
            raise PeerKeyChanged(
                "this peer was verified: compare safety numbers again and call verify_peer",
                account=account,
                verified=True,
            )
        self._peers.accept_pending(account, verified=False)
        await self._peers.refresh(account)
        await self._save_now()

    def is_verified(self, account: uuid.UUID) -> bool:
        record = self._state.peers.get(account)
        return record is not None and record.verified and record.pending_identity_key is None

    def _peer_record(self, account: uuid.UUID) -> PeerRecord:
        record = self._state.peers.get(account)
        if record is None:
            raise PeerUnavailable(f"no identity key known for account {account}")
        return record

    # -- devices ------------------------------------------------------------------------------

    def devices(self, account: uuid.UUID | None = None) -> list[DeviceInfo]:
        """The devices on an account's verified device list (default: this account)."""
        target = account or self._state.account
        assert target is not None
        return [
            DeviceInfo(DeviceId(uuid.UUID(bytes=d)), d == self._state.device_id.bytes)
            for d in sorted(self._peers.devices(target))
        ]

    async def refresh_devices(self, account: uuid.UUID) -> list[DeviceInfo]:
        await self._peers.refresh(account)
        return self.devices(account)

    async def device_request(self) -> DeviceRequest:
        """For a new device of an existing account: what the managing device must approve."""
        if self._state.identity is not None or self._state.account is not None:
            raise ClientError("this keystore already belongs to a registered device")
        await self._save_now()
        keys = self._state.device_keys
        return DeviceRequest(self._state.device_id, keys.signing_key, keys.encryption_key)

    async def accept_approval(self, approval: DeviceApproval | str) -> None:
        """Pin the account and identity key the managing device showed; then log in."""
        if isinstance(approval, str):
            approval = DeviceApproval.decode(approval)
        if self._state.identity_public_key is not None:
            raise ClientError("this keystore already has an identity key")
        self._state.account = approval.account
        self._state.identity_public_key = approval.identity_key
        self._state.peers[approval.account] = PeerRecord(identity_key=approval.identity_key)
        await self._save_now()

    async def add_device(self, request: DeviceRequest | str) -> DeviceApproval:
        """Certify a new device and publish the next device list version (managing device)."""
        if isinstance(request, str):
            request = DeviceRequest.decode(request)
        entries = own_devices.current_entries(self._state)
        new = DeviceEntry(request.device_id.bytes, request.signing_key, request.encryption_key)
        if any(e.device_id == new.device_id for e in entries):
            raise ClientError(f"device {request.device_id} is already on the list")
        await own_devices.publish(
            self._state, self._api, [*entries, new], new=[new], save=self._save_now
        )
        assert self._state.account is not None and self._state.identity is not None
        return DeviceApproval(self._state.account, self._state.identity.public_key)

    async def revoke_device(self, device_id: uuid.UUID) -> None:
        """Remove a device from the account's list; the server closes its sockets."""
        if device_id == self._state.device_id:
            raise ClientError("revoke this device from another one")
        entries = own_devices.current_entries(self._state)
        remaining = [e for e in entries if e.device_id != device_id.bytes]
        if len(remaining) == len(entries):
            raise ClientError(f"device {device_id} is not on the list")
        await own_devices.publish(self._state, self._api, remaining, new=[], save=self._save_now)

    # -- helpers ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client was closed")


class _Opening:
    """What `Client.connect` returns: await it, or use it with `async with`."""

    def __init__(self, factory: Callable[[], Awaitable[Client]]) -> None:
        self._factory = factory
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._factory().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._factory()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close(consumed=exc_type is None)


def _message_id_of(raw_envelope: bytes, limits: EnvelopeLimits) -> bytes:
    try:
        return parse_envelope(raw_envelope, limits).message_id
    except EnvelopeError:
        return b""


def _websocket_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + "/v1/ws"
    raise ClientError(f"server url must start with http:// or https://, not {url!r}")
