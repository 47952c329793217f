"""What `Client.events()` yields: messages and everything else an app should know about.

Every event is a frozen dataclass. Messages come decrypted and verified, once each, in each
sender device's order; anything the SDK noticed on the way (a dropped, reordered or duplicated
message, an envelope it could not open, a changed device list) is an event too, never swallowed.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import NewType

AccountId = NewType("AccountId", uuid.UUID)
DeviceId = NewType("DeviceId", uuid.UUID)
ConversationId = NewType("ConversationId", uuid.UUID)
MessageId = NewType("MessageId", str)  # 32 lower-case hex digits, as on the wire
GrantId = NewType("GrantId", uuid.UUID)


@dataclass(frozen=True, slots=True)
class Message:
    """A decrypted message whose signature, sender device and conversation were verified."""

    conversation: ConversationId
    message_id: MessageId
    sender: AccountId
    sender_device: DeviceId
    sent_ms: int  # the sender's clock
    counter: int  # the sender device's counter in this conversation
    content: str | bytes
    outgoing: bool  # sent by another device of this account
    seq: int  # this device's delivery sequence number

    @property
    def text(self) -> str:
        """The content of a text message; raise `TypeError` for a binary one."""
        if not isinstance(self.content, str):
            raise TypeError("this message carries bytes, not text")
        return self.content


class AnomalyKind(enum.StrEnum):
    MISSING = "missing"  # counters first..last of a sender device never arrived (so far)
    LATE = "late"  # a message arrived after later ones from the same device (reordered)
    DUPLICATE = "duplicate"  # a message already delivered arrived again; it is not repeated
    CHAIN_BROKEN = "chain_broken"  # the previous-message hash does not match what arrived


@dataclass(frozen=True, slots=True)
class Anomaly:
    """The server (or the sender's own state) broke a sender device's message chain.

    A hostile or faulty server can drop, reorder or replay envelopes but cannot forge them; the
    counters and hashes inside the encrypted payload make that visible here.
    """

    kind: AnomalyKind
    conversation: ConversationId
    sender: AccountId
    sender_device: DeviceId
    first: int  # sender counters concerned, first..last
    last: int
    detail: str
    message_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """A delivery that could not be verified or decrypted; `reason` says which check failed.

    The delivery is acknowledged (retrying cannot make it open); nothing of its content is used.
    """

    seq: int
    reason: str
    conversation: ConversationId | None = None
    sender: AccountId | None = None
    sender_device: DeviceId | None = None
    message_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """The server's retention removed deliveries `first..last` before this device fetched them."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Everything queued for this device up to `seq` was delivered; later messages are live."""

    seq: int


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """An account's verified device list changed (a device added or revoked)."""

    account: AccountId
    list_version: int
    added: tuple[DeviceId, ...]
    removed: tuple[DeviceId, ...]


@dataclass(frozen=True, slots=True)
class DeviceListRejected:
    """The server served a device list that did not verify; the last trusted one stays in use."""

    account: AccountId
    reason: str


@dataclass(frozen=True, slots=True)
class IdentityChanged:
    """An account's identity key is not the pinned one. Sends to it are blocked until the app
    calls `accept_identity_change` or (for a verified peer) `verify_peer`."""

    account: AccountId
    verified: bool


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A message queued by an earlier run was refused when it was retried."""

    conversation: ConversationId
    message_id: MessageId
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """A supervisor grant this device verified: signed by a device on the conversation
    therapist's verified device list, for this conversation, naming `supervisor`."""

    id: GrantId
    conversation: ConversationId
    therapist: AccountId
    therapist_device: DeviceId
    supervisor: AccountId
    from_ms: int  # the supervisor reads from here (inclusive) ...
    until_ms: int  # ... to here (exclusive), as signed by the therapist
    include_history: bool  # the therapist may share earlier messages (`share_history`)
    client_consented: bool  # carries the client's verified co-signature
    revoked_ms: int | None = None  # ended early by the therapist or the client

    def in_force(self, now_ms: int) -> bool:
        """Whether the supervisor reads at `now_ms` (started, not expired, not revoked)."""
        return self.revoked_ms is None and self.from_ms <= now_ms < self.until_ms


@dataclass(frozen=True, slots=True)
class SupervisorGranted:
    """A verified grant makes `grant.supervisor` a reader of the conversation (from
    `grant.from_ms` to `grant.until_ms`): show it. New messages are also encrypted to the
    supervisor's verified devices while it is in force."""

    grant: GrantInfo


class GrantEndReason(enum.StrEnum):
    REVOKED = "revoked"  # ended early by the therapist or the client
    EXPIRED = "expired"  # `until_ms` passed


@dataclass(frozen=True, slots=True)
class GrantEnded:
    """A grant ended: the supervisor is no longer a reader of new messages."""

    grant: GrantInfo
    reason: GrantEndReason
    ended_ms: int


@dataclass(frozen=True, slots=True)
class GrantRejected:
    """The server presented a grant that did not verify (unsigned, signed by a device that is
    not the conversation's therapist's, altered, or for someone else's conversation). It is
    ignored: its supervisor is never encrypted to because of it."""

    reason: str
    conversation: ConversationId | None = None
    grant_id: GrantId | None = None


Event = (
    Message
    | Anomaly
    | Undecryptable
    | Gap
    | CaughtUp
    | DeviceChanged
    | DeviceListRejected
    | IdentityChanged
    | SendFailed
    | SupervisorGranted
    | GrantEnded
    | GrantRejected
)
