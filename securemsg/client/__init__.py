"""The securemsg Python SDK: an async, end-to-end encrypted client for one device.

`Client.connect(...)` opens the keystore; `login` registers the device and attaches the socket;
`send` encrypts to the conversation's two readers; `events()` yields messages and everything the
SDK noticed. `securemsg.client.blocking` wraps it for scripts. docs/sdk.md is the guide and the
reference; every public name is listed in `__all__`.
"""

from securemsg.client.client import Client, ClientOptions, DeviceInfo
from securemsg.client.conversations import Conversation, Member
from securemsg.client.devices import DeviceApproval, DeviceRequest
from securemsg.client.disclosures import Disclosure
from securemsg.client.errors import (
    AuthenticationError,
    ClientClosed,
    ClientError,
    ConnectionLost,
    ConversationChanged,
    DeviceRevoked,
    Displaced,
    HistoryTampered,
    KeystoreError,
    KeystoreTampered,
    PeerKeyChanged,
    PeerUnavailable,
    RequestFailed,
    SendRefused,
    TrustError,
    VerificationFailed,
    WrongPassphrase,
)
from securemsg.client.events import (
    AccountId,
    Anomaly,
    AnomalyKind,
    CaughtUp,
    ConversationId,
    DeviceChanged,
    DeviceId,
    DeviceListRejected,
    Event,
    Gap,
    GrantEnded,
    GrantEndReason,
    GrantId,
    GrantInfo,
    GrantRejected,
    IdentityChanged,
    Message,
    MessageId,
    SendFailed,
    SupervisorGranted,
    Undecryptable,
)
from securemsg.client.outbox import Sent
from securemsg.crypto.keystore import KdfParams
from securemsg.crypto.safety import SafetyNumber

__all__ = [
    "AccountId",
    "Anomaly",
    "AnomalyKind",
    "AuthenticationError",
    "CaughtUp",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientOptions",
    "ConnectionLost",
    "Conversation",
    "ConversationChanged",
    "ConversationId",
    "DeviceApproval",
    "DeviceChanged",
    "DeviceId",
    "DeviceInfo",
    "DeviceListRejected",
    "DeviceRequest",
    "DeviceRevoked",
    "Disclosure",
    "Displaced",
    "Event",
    "Gap",
    "GrantEndReason",
    "GrantEnded",
    "GrantId",
    "GrantInfo",
    "GrantRejected",
    "HistoryTampered",
    "IdentityChanged",
    "KdfParams",
    "KeystoreError",
    "KeystoreTampered",
    "Member",
    "Message",
    "MessageId",
    "PeerKeyChanged",
    "PeerUnavailable",
    "RequestFailed",
    "SafetyNumber",
    "SendFailed",
    "SendRefused",
    "Sent",
    "SupervisorGranted",
    "TrustError",
    "Undecryptable",
    "VerificationFailed",
    "WrongPassphrase",
]
