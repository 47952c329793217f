"""Supervisor grants on the device: verified before they count, shown once, ended on time.

A supervisor becomes a reader of a conversation only through a grant that the conversation's
therapist signed with a device on the therapist's verified device list (docs/confidentiality.md).
The server carries grants two ways, and this device verifies both the same way: the `grant`
system event in its delivery queue (in order with the messages), and the grants listing it reads
at login, so a device that was offline or new when the grant was made still learns of it. A
grant that does not verify is reported as `GrantRejected` and never makes anyone a recipient.

The server is trusted only to *end* grants early (a `grant_ended` event, or a listing that says
revoked): that can only take a reader away. Expiry needs nobody: `until_ms` is in the signed
record, and a timer reports `GrantEnded` when it passes.

Verified grants are kept in the keystore (`KeystoreState.grants`), so the supervisor's device,
which has no conversation list, knows what it supervises after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

from securemsg.client.conversations import Conversation
from securemsg.client.errors import ClientError, ConnectionLost, RequestFailed
from securemsg.client.events import (
    AccountId,
    ConversationId,
    DeviceId,
    Event,
    GrantEnded,
    GrantEndReason,
    GrantId,
    GrantInfo,
    GrantRejected,
    SupervisorGranted,
)
from securemsg.client.http import Api, GrantListing
from securemsg.client.keystore import GrantState, KeystoreState
from securemsg.client.peers import Peers
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.grants import verify_consent, verify_grant
from securemsg.protocol.grants import (
    CONSENT_BYTES,
    GRANT_BYTES,
    Grant,
    GrantError,
    parse_consent,
    parse_grant,
)

GRANT_EVENT = "grant"
GRANT_ENDED_EVENT = "grant_ended"
_ENDED_BYTES = 16 + 8  # grant id, end time (u64 ms)
_MAX_SLEEP_SECONDS = 60.0

ConversationLookup = Callable[[uuid.UUID], Awaitable[Conversation | None]]
Notify = Callable[[Event], None]


def now_ms() -> int:
    return int(time.time() * 1000)


class _Rejected(Exception):
    def __init__(self, reason: str, grant: Grant | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.grant = grant

    def event(self) -> GrantRejected:
        grant = self.grant
        return GrantRejected(
            self.reason,
            None if grant is None else ConversationId(uuid.UUID(bytes=grant.conversation_id)),
            None if grant is None else GrantId(uuid.UUID(bytes=grant.grant_id)),
        )


class GrantBook:
    """The grants this device verified, and the decisions that depend on them."""

    def __init__(
        self,
        state: KeystoreState,
        peers: Peers,
        api: Api,
        conversations: ConversationLookup,
        *,
        notify: Notify,
        on_change: Callable[[], object],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.state = state
        self.peers = peers
        self.api = api
        self.conversations = conversations
        self.notify = notify
        self.on_change = on_change
        self.clock = clock
        self._parsed: dict[uuid.UUID, Grant] = {}
        self._wake = asyncio.Event()

    # -- what is known ------------------------------------------------------------------------

    def info(self, grant_id: uuid.UUID) -> GrantInfo | None:
        stored = self.state.grants.get(grant_id)
        if stored is None:
            return None
        grant = self._parse(grant_id, stored)
        return GrantInfo(
            id=GrantId(grant_id),
            conversation=ConversationId(uuid.UUID(bytes=grant.conversation_id)),
            therapist=AccountId(uuid.UUID(bytes=grant.therapist_account)),
            therapist_device=DeviceId(uuid.UUID(bytes=grant.therapist_device)),
            supervisor=AccountId(uuid.UUID(bytes=grant.supervisor_account)),
            from_ms=grant.from_ms,
            until_ms=grant.until_ms,
            include_history=grant.include_history,
            client_consented=stored.consent is not None,
            revoked_ms=stored.ended_ms,
        )

    def known(self, conversation: uuid.UUID | None = None) -> list[GrantInfo]:
        """Verified grants (of one conversation), oldest start first."""
        found = [self.info(g) for g in self.state.grants]
        return sorted(
            (g for g in found if g is not None and conversation in (None, g.conversation)),
            key=lambda g: (g.from_ms, g.until_ms, g.id),
        )

    def supervisors_in_force(
        self,
        conversation: uuid.UUID,
        at_ms: int,
        *,
        excluding: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(),
    ) -> set[AccountId]:
        """Accounts a sender in `conversation` must also encrypt to now: the supervisors of its
        verified grants in force (never this account)."""
        return {
            g.supervisor
            for g in self.known(conversation)
            if g.in_force(at_ms) and g.id not in excluding and g.supervisor != self.state.account
        }

    def supervising(
        self, conversation: uuid.UUID, at_ms: int, *, history: bool = False
    ) -> list[GrantInfo]:
        """Verified grants in force that make this account a supervisor of `conversation`."""
        return [
            g
            for g in self.known(conversation)
            if g.supervisor == self.state.account
            and g.in_force(at_ms)
            and (g.include_history or not history)
        ]

    def supervised_conversations(self) -> set[uuid.UUID]:
        return {g.conversation for g in self.known() if g.supervisor == self.state.account}

    def admit_supervised(self, conversation: uuid.UUID, sender: uuid.UUID) -> str | None:
        """For a supervisor: None if `sender` may be read in `conversation`, else why not.

        The readers are the therapist who signed a verified grant naming this account, and the
        conversation's client, pinned the first time a message from someone else arrives (or
        when the client's consent to a grant verified): nothing signed names the client to a
        supervisor, so this is trust on first use, like identity keys.
        """
        grants = [g for g in self.known(conversation) if g.supervisor == self.state.account]
        if not grants:
            return "not a conversation this account reads or supervises"
        if sender in {g.therapist for g in grants}:
            return None
        pinned = self.state.supervised.get(conversation)
        if pinned is None:
            self.state.supervised[conversation] = sender
            self.on_change()
            return None
        if pinned != sender:
            return "sender is neither the therapist who granted access nor the pinned client"
        return None

    # -- verifying ----------------------------------------------------------------------------

    async def check(self, record: bytes, consent: bytes | None) -> Grant:
        """The grant, if it verifies for this account; raise `_Rejected` with the reason."""
        try:
            grant = parse_grant(record)
        except GrantError as error:
            raise _Rejected(f"malformed grant: {error}") from None
        conversation_id = uuid.UUID(bytes=grant.conversation_id)
        therapist = uuid.UUID(bytes=grant.therapist_account)
        supervisor = uuid.UUID(bytes=grant.supervisor_account)
        me = self.state.account
        client: uuid.UUID | None
        if supervisor == me:
            if therapist == me:
                raise _Rejected("grant names the same account as therapist and supervisor", grant)
            client = self.state.supervised.get(conversation_id)
        else:
            conversation = await self._conversation(conversation_id, grant)
            roles = {conversation.me.role: conversation.me.account}
            roles[conversation.peer.role] = conversation.peer.account
            if roles.get("therapist") != therapist:
                raise _Rejected("grant is not from this conversation's therapist", grant)
            if supervisor in roles.values():
                raise _Rejected("grant names a participant as the supervisor", grant)
            client = roles.get("client")
        key = await self._device_key(therapist, grant.therapist_device)
        if key is None:
            raise _Rejected(
                "the signing device is not on the therapist's verified device list", grant
            )
        try:
            verify_grant(record, key)
        except InvalidSignature:
            raise _Rejected(
                "grant signature does not verify with the therapist's device key (forged or"
                " altered)",
                grant,
            ) from None
        if consent is not None:
            await self._check_consent(grant, consent, client)
        return grant

    async def _conversation(self, conversation_id: uuid.UUID, grant: Grant) -> Conversation:
        try:
            conversation = await self.conversations(conversation_id)
        except ConnectionLost:
            raise
        except ClientError as error:
            raise _Rejected(f"conversation cannot be trusted: {error}", grant) from None
        if conversation is None:
            raise _Rejected("grant is for a conversation this account does not read", grant)
        return conversation

    async def _check_consent(self, grant: Grant, consent: bytes, client: uuid.UUID | None) -> None:
        try:
            parsed = parse_consent(consent)
        except GrantError as error:
            raise _Rejected(f"malformed consent: {error}", grant) from None
        consenter = uuid.UUID(bytes=parsed.client_account)
        if client is not None and consenter != client:
            raise _Rejected("consent is not from the conversation's client", grant)
        key = await self._device_key(consenter, parsed.client_device)
        try:
            if key is None:
                raise InvalidSignature("unknown device")
            verify_consent(consent, grant, key)
        except InvalidSignature:
            raise _Rejected("the client's consent does not verify", grant) from None
        conversation = uuid.UUID(bytes=grant.conversation_id)
        if client is None and grant.supervisor_account == _bytes(self.state.account):
            self.state.supervised[conversation] = consenter
            self.on_change()

    async def _device_key(self, account: uuid.UUID, device: bytes) -> bytes | None:
        key = self.peers.current_signing_key(account, device)
        if key is None:
            try:
                await self.peers.refresh(account)
            except RequestFailed:
                return None
            key = self.peers.current_signing_key(account, device)
        return key

    # -- learning -----------------------------------------------------------------------------

    async def on_delivery(
        self, kind: str, data: bytes | None
    ) -> tuple[list[Event], Callable[[], None] | None]:
        """A system event from the delivery queue: the events it makes, and what to record
        once the application consumed them."""
        if data is None:
            return [GrantRejected(f"{kind} event is not valid base64")], None
        if kind == GRANT_EVENT:
            if len(data) not in (GRANT_BYTES, GRANT_BYTES + CONSENT_BYTES):
                return [GrantRejected(f"grant event of {len(data)} bytes")], None
            record, consent = data[:GRANT_BYTES], data[GRANT_BYTES:] or None
            try:
                grant_id = self._learn(await self.check(record, consent), record, consent)
            except _Rejected as rejected:
                return [rejected.event()], None
            stored = self.state.grants[grant_id]
            info = self.info(grant_id)
            if stored.announced or info is None:
                return [], None
            return [SupervisorGranted(info)], lambda: self._announced(grant_id)
        if kind == GRANT_ENDED_EVENT:
            if len(data) != _ENDED_BYTES:
                return [GrantRejected(f"grant_ended event of {len(data)} bytes")], None
            grant_id = uuid.UUID(bytes=data[:16])
            event = self._revoked(grant_id, int.from_bytes(data[16:], "big"))
            if event is None:
                return [], None
            return [event], lambda: self._end_announced(grant_id)
        return [GrantRejected(f"unknown system event {kind!r}")], None

    async def refresh(self, conversation: uuid.UUID) -> tuple[list[GrantInfo], set[uuid.UUID]]:
        """Read the server's grants of `conversation`, verify each, and report what is new.

        Returns the verified grants, and the ids of those the server says are not in force now
        (a sender leaves their supervisor out when the server refused a send over it).
        """
        listings = await self.api.grants(conversation)
        verified: list[GrantInfo] = []
        inactive: set[uuid.UUID] = set()
        for listing in listings:
            try:
                grant = await self.check(listing.record, listing.consent)
                _matches(listing, grant, conversation)
                grant_id = self._learn(grant, listing.record, listing.consent)
            except _Rejected as rejected:
                self.notify(rejected.event())
                continue
            stored = self.state.grants[grant_id]
            info = self.info(grant_id)
            if not stored.announced and info is not None:
                self.notify(SupervisorGranted(info))
                self._announced(grant_id)
            if listing.revoked_ms is not None:
                ended = self._revoked(grant_id, listing.revoked_ms)
                if ended is not None:
                    self.notify(ended)
                    self._end_announced(grant_id)
            if not listing.active:
                inactive.add(grant_id)
            info = self.info(grant_id)
            if info is not None:
                verified.append(info)
        return sorted(verified, key=lambda g: (g.from_ms, g.until_ms, g.id)), inactive

    def remember(self, record: bytes, consent: bytes | None) -> GrantInfo:
        """A grant this device signed itself and the server accepted: in force at once here.
        (`SupervisorGranted` still comes with the server's `grant` event, as on every device.)"""
        grant_id = self._learn(parse_grant(record), record, consent)
        info = self.info(grant_id)
        assert info is not None
        return info

    def revoked(self, grant_id: uuid.UUID, ended_ms: int) -> GrantInfo | None:
        """This device ended the grant: no longer in force here. (`GrantEnded` still comes
        with the server's `grant_ended` event, as on every device.)"""
        self._revoked(grant_id, ended_ms)
        return self.info(grant_id)

    def _learn(self, grant: Grant, record: bytes, consent: bytes | None) -> uuid.UUID:
        grant_id = uuid.UUID(bytes=grant.grant_id)
        stored = self.state.grants.get(grant_id)
        if stored is None:
            self.state.grants[grant_id] = GrantState(record, consent)
            self.on_change()
            self._wake.set()
        elif stored.record != record:
            raise _Rejected("a different grant under the id of a known one", grant)
        elif stored.consent is None and consent is not None:
            stored.consent = consent
            self.on_change()
        return grant_id

    def _revoked(self, grant_id: uuid.UUID, ended_ms: int) -> GrantEnded | None:
        stored = self.state.grants.get(grant_id)
        if stored is None:
            return None  # never verified here: nothing to end
        if stored.ended_ms is None:
            grant = self._parse(grant_id, stored)
            if ended_ms >= grant.until_ms:
                return None  # it expired before that; expiry reports it
            stored.ended_ms = ended_ms
            self.on_change()
            self._wake.set()
        if stored.end_announced:
            return None
        info = self.info(grant_id)
        assert info is not None
        return GrantEnded(info, GrantEndReason.REVOKED, stored.ended_ms)

    def _announced(self, grant_id: uuid.UUID) -> None:
        stored = self.state.grants.get(grant_id)
        if stored is not None and not stored.announced:
            stored.announced = True
            self.on_change()
            self._wake.set()

    def _end_announced(self, grant_id: uuid.UUID) -> None:
        stored = self.state.grants.get(grant_id)
        if stored is not None and not stored.end_announced:
            stored.end_announced = True
            self.on_change()

    def _parse(self, grant_id: uuid.UUID, stored: GrantState) -> Grant:
        grant = self._parsed.get(grant_id)
        if grant is None or grant.raw != stored.record:
            grant = self._parsed[grant_id] = parse_grant(stored.record)
        return grant

    # -- expiry -------------------------------------------------------------------------------

    def expire(self, at_ms: int) -> list[Event]:
        """`GrantEnded` for each announced grant that expired by `at_ms` (once each)."""
        events: list[Event] = []
        for grant_id, stored in self.state.grants.items():
            if not stored.announced or stored.end_announced or stored.ended_ms is not None:
                continue
            grant = self._parse(grant_id, stored)
            if grant.until_ms <= at_ms:
                info = self.info(grant_id)
                assert info is not None
                events.append(GrantEnded(info, GrantEndReason.EXPIRED, grant.until_ms))
                stored.end_announced = True
                self.on_change()
        return events

    def next_expiry(self) -> int | None:
        pending = [
            self._parse(grant_id, stored).until_ms
            for grant_id, stored in self.state.grants.items()
            if stored.announced and not stored.end_announced and stored.ended_ms is None
        ]
        return min(pending, default=None)

    async def watch(self) -> None:
        """Report expiries as they happen (runs while the client is logged in)."""
        while True:
            for event in self.expire(self.clock()):
                self.notify(event)
            self._wake.clear()
            upcoming = self.next_expiry()
            delay = _MAX_SLEEP_SECONDS
            if upcoming is not None:
                delay = min(delay, max(0.0, (upcoming - self.clock()) / 1000) + 0.001)
            # (not asyncio.wait_for: on 3.11 it can swallow a cancel that races a wake-up)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()


def _matches(listing: GrantListing, grant: Grant, conversation: uuid.UUID) -> None:
    """The server's listing must say what the signed record says."""
    if (
        listing.id.bytes != grant.grant_id
        or listing.conversation.bytes != grant.conversation_id
        or conversation.bytes != grant.conversation_id
        or listing.supervisor.bytes != grant.supervisor_account
        or listing.therapist.bytes != grant.therapist_account
        or listing.from_ms != grant.from_ms
        or listing.until_ms != grant.until_ms
        or listing.include_history != grant.include_history
    ):
        raise _Rejected("the server's listing does not match the signed grant", grant)


def _bytes(account: uuid.UUID | None) -> bytes | None:
    return None if account is None else account.bytes
