"""Every exception the SDK raises to an application: one tree under `ClientError`.

    SecuremsgError
     └── ClientError                      anything the SDK reports to the application
          ├── AuthenticationError         login refused, or the session ended (log in again)
          ├── ConnectionLost              the server could not be reached (the SDK retries sends)
          ├── RequestFailed               the server answered an HTTP request with an error code
          ├── SendRefused                 the server refused an envelope; `code` says why
          ├── KeystoreError               the keystore file cannot be used
          │    ├── WrongPassphrase
          │    └── KeystoreTampered       the file was changed or damaged
          ├── TrustError                  a peer's keys cannot be trusted right now
          │    ├── PeerKeyChanged         a peer's identity key changed; sends wait for re-trust
          │    ├── PeerUnavailable        the peer has no verified device to encrypt to
          │    ├── ConversationChanged    the server changed who is in a conversation
          │    └── VerificationFailed     a scanned safety number does not match
          ├── DeviceRevoked               this device is no longer on the account's device list
          ├── Displaced                   another connection attached this device
          └── ClientClosed                the client was closed

Library exceptions (httpx, websockets, OSError) never reach the application; they are mapped to
these with the original as `__cause__`.
"""

from __future__ import annotations

import uuid

from securemsg.errors import SecuremsgError
from securemsg.protocol.errors import ErrorCode


class ClientError(SecuremsgError):
    """Base class of the SDK's exceptions."""


class AuthenticationError(ClientError):
    """The username and password were refused, or the session ended; log in again."""


class ConnectionLost(ClientError):
    """The server could not be reached. Pending sends are kept and retried on reconnect."""


class RequestFailed(ClientError):
    """An HTTP request was answered with an error body."""

    def __init__(self, message: str, *, code: ErrorCode | str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class SendRefused(ClientError):
    """The server refused an envelope and stored nothing. `code` is the wire error code."""

    def __init__(self, message: str, *, code: ErrorCode | str) -> None:
        super().__init__(message)
        self.code = code


class KeystoreError(ClientError):
    """The keystore file cannot be used."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open the keystore."""


class KeystoreTampered(KeystoreError):
    """The keystore file does not authenticate: it was modified, truncated or damaged."""


class HistoryTampered(KeystoreError):
    """The keystore's history file does not authenticate: a record was modified, moved or
    removed, or the file was truncated."""


class TrustError(ClientError):
    """A peer's keys cannot be trusted now; nothing was encrypted to them."""


class PeerKeyChanged(TrustError):
    """A peer's identity key is not the pinned one. Sends to the peer wait until the new key is
    accepted (`Client.accept_identity_change`) or, for a verified peer, re-verified
    (`Client.verify_peer`)."""

    def __init__(self, message: str, *, account: uuid.UUID, verified: bool) -> None:
        super().__init__(message)
        self.account = account
        self.verified = verified


class PeerUnavailable(TrustError):
    """The peer has published no device this client could verify."""


class ConversationChanged(TrustError):
    """The server now names a different peer for a conversation than the one pinned."""


class VerificationFailed(TrustError):
    """A safety number scanned from the peer's screen differs from ours: do not trust the peer."""


class DeviceRevoked(ClientError):
    """This device was removed from the account's device list."""


class Displaced(ClientError):
    """Another connection attached the same device (is the keystore open twice?)."""


class ClientClosed(ClientError):
    """The client is closed."""
