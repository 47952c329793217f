"""Which devices this client encrypts to: identity keys pinned, device lists verified.

An account's identity key (AIK) is pinned the first time it is seen (or, for this account, taken
from the keystore). A device list is used only if that pinned AIK signed it and it is not older
than the last one accepted (rollback and fork protection, `verify_device_list`). A different AIK
is never adopted silently: it is recorded as pending and blocks sends to the account until the
application accepts it. A list that fails verification is reported and the last trusted list
stays in use, so nothing the server adds on its own is ever a recipient.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from securemsg.client.errors import ConnectionLost, PeerKeyChanged, PeerUnavailable
from securemsg.client.events import (
    AccountId,
    DeviceChanged,
    DeviceId,
    DeviceListRejected,
    Event,
    IdentityChanged,
)
from securemsg.client.http import Api, PublishedDevices
from securemsg.client.keystore import KeystoreState, PeerRecord
from securemsg.crypto.devices import verify_device_list
from securemsg.crypto.errors import InvalidSignature
from securemsg.protocol.devices import DeviceError, DeviceList, parse_device_list


class Peers:
    """Trust decisions about accounts' keys; state lives in the keystore."""

    def __init__(
        self,
        state: KeystoreState,
        api: Api,
        *,
        refresh_seconds: float,
        notify: Callable[[Event], None],
        on_change: Callable[[], object],
    ) -> None:
        self.state = state
        self.api = api
        self.refresh_seconds = refresh_seconds
        self.notify = notify
        self.on_change = on_change  # the keystore has something new to save
        self._fetched: dict[uuid.UUID, float] = {}

    # -- fetching -----------------------------------------------------------------------------

    async def refresh(self, account: uuid.UUID) -> None:
        """Fetch the account's published keys now and apply them."""
        published = await self.api.devices(account)
        self._fetched[account] = time.monotonic()
        self.apply(published)

    async def ensure_fresh(self, account: uuid.UUID) -> None:
        """Refresh if the cached list is older than `refresh_seconds`. If the server is
        unreachable, a trusted list already held is used; with none, raise `ConnectionLost`."""
        fetched = self._fetched.get(account)
        record = self.state.peers.get(account)
        trusted = record is not None and record.device_list is not None
        if trusted and fetched is not None and time.monotonic() - fetched < self.refresh_seconds:
            return
        try:
            await self.refresh(account)
        except ConnectionLost:
            if not trusted:
                raise

    def apply(self, published: PublishedDevices) -> None:
        """Pin, verify and adopt what the server publishes for an account, or report why not."""
        account = AccountId(published.account)
        if published.identity_key is None:
            return  # the account has not registered a device yet
        record = self.state.peers.get(account)
        if record is None:
            if account == self.state.account:
                return  # our own AIK comes from the keystore, never from the server
            record = PeerRecord(identity_key=published.identity_key)
            self.state.peers[account] = record
            self.on_change()
        elif published.identity_key != record.identity_key:
            if record.pending_identity_key != published.identity_key:
                record.pending_identity_key = published.identity_key
                self.on_change()
                self.notify(IdentityChanged(account, verified=record.verified))
            return  # nothing signed by an unaccepted key is used
        elif record.pending_identity_key is not None:
            record.pending_identity_key = None  # the server shows the pinned key again
            self.on_change()
        raw = published.device_list
        if raw is None or raw == record.device_list:
            return
        try:
            verified = verify_device_list(
                raw,
                record.identity_key,
                account_id=account.bytes,
                min_version=record.list_version,
                current=record.device_list,
            )
        except (InvalidSignature, DeviceError) as error:
            self.notify(DeviceListRejected(account, str(error)))
            return
        self._adopt(account, record, verified)

    def _adopt(self, account: AccountId, record: PeerRecord, verified: DeviceList) -> None:
        had_list = record.device_list is not None
        added, removed = record.adopt(verified)
        self.on_change()
        if had_list and (added or removed):
            self.notify(
                DeviceChanged(
                    account,
                    verified.list_version,
                    added=tuple(DeviceId(uuid.UUID(bytes=d)) for d in sorted(added)),
                    removed=tuple(DeviceId(uuid.UUID(bytes=d)) for d in sorted(removed)),
                )
            )

    # -- trust decisions ----------------------------------------------------------------------

    def check_sendable(self, account: uuid.UUID) -> None:
        """Raise unless the account has an accepted AIK and a verified device list."""
        record = self.state.peers.get(account)
        if record is None or record.device_list is None:
            raise PeerUnavailable(f"account {account} has no verified device yet")
        if record.pending_identity_key is not None:
            what = (
                "re-verify it with verify_peer"
                if record.verified
                else ("accept it with accept_identity_change or verify it with verify_peer")
            )
            raise PeerKeyChanged(
                f"the identity key of account {account} changed; {what}",
                account=account,
                verified=record.verified,
            )

    def devices(self, account: uuid.UUID) -> dict[bytes, bytes]:
        """device id -> X25519 key, from the account's verified list (empty if none)."""
        record = self.state.peers.get(account)
        if record is None:
            return {}
        return {d: keys[1] for d, keys in _entries(record).items()}

    def signing_key(self, account: uuid.UUID, device_id: bytes, sent_ms: int) -> bytes | None:
        """The signing key of a device on the account's verified list; of a device revoked
        since, only for a message dated before the list that revoked it."""
        record = self.state.peers.get(account)
        if record is None or record.pending_identity_key is not None:
            return None
        current = _entries(record).get(device_id)
        if current is not None:
            return current[0]
        revoked_ms = record.revoked_ms.get(device_id)
        if revoked_ms is not None and sent_ms < revoked_ms:
            return record.known_devices.get(device_id)
        return None

    def current_signing_key(self, account: uuid.UUID, device_id: bytes) -> bytes | None:
        """The signing key of a device on the account's current verified list, under an
        accepted identity key (for records that carry no trustworthy date, such as grants)."""
        record = self.state.peers.get(account)
        if record is None or record.pending_identity_key is not None:
            return None
        current = _entries(record).get(device_id)
        return None if current is None else current[0]

    def record(self, account: uuid.UUID) -> PeerRecord | None:
        return self.state.peers.get(account)

    def accept_pending(self, account: uuid.UUID, *, verified: bool) -> None:
        """Pin the pending AIK (or keep the current one) and start over with its device lists."""
        record = self.state.peers.get(account)
        if record is None:
            raise PeerUnavailable(f"account {account} has no published identity key")
        if record.pending_identity_key is not None:
            self.state.peers[account] = PeerRecord(
                identity_key=record.pending_identity_key, verified=verified
            )
            self._fetched.pop(account, None)
        else:
            record.verified = verified
        self.on_change()


def _entries(record: PeerRecord) -> dict[bytes, tuple[bytes, bytes]]:
    if record.device_list is None:
        return {}
    parsed = parse_device_list(record.device_list)
    return {e.device_id: (e.signing_key, e.encryption_key) for e in parsed.entries}
