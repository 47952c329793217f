"""Device registration: the server records only what the account's identity key signed.

An account publishes its identity key once (clients pin it) and then a versioned, AIK-signed
device list; each new device on it comes with an AIK-signed certificate. Devices dropped from a
newer list are revoked. The server checks every signature so it never stores a list clients
would reject, but clients verify again: the server is not trusted to add readers.
"""

from __future__ import annotations

import dataclasses
import uuid

from securemsg.audit.events import Actor, AuditAction, AuditEvent, Outcome, Source, Subject
from securemsg.crypto.devices import verify_device_certificate, verify_device_list
from securemsg.crypto.errors import InvalidSignature
from securemsg.protocol.devices import DeviceError, DeviceListLimits
from securemsg.protocol.errors import ErrorCode, ProtocolError
from securemsg.settings import Settings
from securemsg.storage.accounts import Account, AccountStore
from securemsg.storage.audit import AuditLog
from securemsg.storage.database import Database
from securemsg.storage.devices import DeviceStore
from securemsg.storage.grants import linked


class DeviceRegistrationError(ProtocolError):
    code = ErrorCode.BAD_DEVICE


@dataclasses.dataclass(frozen=True)
class PublishedDevices:
    account_id: uuid.UUID
    identity_key: bytes | None
    device_list: bytes | None
    certificates: dict[uuid.UUID, bytes]


@dataclasses.dataclass(frozen=True)
class Registered:
    list_version: int
    revoked: list[uuid.UUID]


class DeviceService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.limits = DeviceListLimits(max_devices=settings.max_devices_per_account)

    async def publish(
        self,
        account_id: uuid.UUID,
        *,
        identity_key: bytes,
        device_list: bytes,
        certificates: list[bytes],
        now_ms: int,
        source: Source | None = None,
    ) -> Registered:
        """Record a new signed device list (and certificates of the devices new on it), and
        audit the change in the same transaction."""
        async with self.database.write() as conn:
            accounts = AccountStore(conn)
            account = await accounts.get(account_id)
            if account.identity_key is not None and account.identity_key != identity_key:
                raise DeviceRegistrationError(
                    "this account already has a different identity key; an admin must reset it"
                )
            try:
                listed = verify_device_list(
                    device_list,
                    identity_key,
                    account_id=account_id.bytes,
                    min_version=account.device_list_version,
                    current=account.device_list,
                    limits=self.limits,
                )
                certified = {}
                for raw in certificates:
                    cert = verify_device_certificate(raw, identity_key, account_id=account_id.bytes)
                    certified[cert.device_id] = cert
            except InvalidSignature as exc:
                raise DeviceRegistrationError(str(exc), code=ErrorCode.BAD_SIGNATURE) from None
            except DeviceError:
                raise
            store = DeviceStore(conn)
            added: list[uuid.UUID] = []
            known = {
                d.id.bytes: d for d in await store.of_accounts([account_id], active_only=False)
            }
            for entry in listed.entries:
                device = known.get(entry.device_id)
                device_uuid = uuid.UUID(bytes=entry.device_id)
                if device is not None:
                    if not device.active:
                        raise DeviceRegistrationError(f"device {device_uuid} was revoked")
                    if (device.signing_key, device.encryption_key) != (
                        entry.signing_key,
                        entry.encryption_key,
                    ):
                        raise DeviceRegistrationError(f"device {device_uuid} changed its keys")
                    continue
                new_cert = certified.get(entry.device_id)
                if new_cert is None:
                    raise DeviceRegistrationError(f"new device {device_uuid} needs a certificate")
                if (new_cert.signing_key, new_cert.encryption_key) != (
                    entry.signing_key,
                    entry.encryption_key,
                ):
                    raise DeviceRegistrationError(
                        f"certificate of device {device_uuid} does not match the list"
                    )
                if await store.get(device_uuid) is not None:  # another account's device
                    raise DeviceRegistrationError(f"device id {device_uuid} is already taken")
                added.append(device_uuid)
                await store.add(
                    device_id=device_uuid,
                    account_id=account_id,
                    signing_key=entry.signing_key,
                    encryption_key=entry.encryption_key,
                    certificate=new_cert.raw,
                    now_ms=now_ms,
                )
            revoked = await store.revoke_except(
                account_id, [uuid.UUID(bytes=e.device_id) for e in listed.entries], now_ms=now_ms
            )
            await accounts.set_identity(
                account_id,
                identity_key=identity_key,
                device_list=device_list,
                device_list_version=listed.list_version,
            )
            event = _published_event(account, listed.list_version, added, revoked, source)
            await AuditLog(conn).record(event, now_ms=now_ms)
        return Registered(listed.list_version, revoked)

    async def published(
        self, requester: uuid.UUID, account_id: uuid.UUID, *, now_ms: int
    ) -> PublishedDevices | None:
        """An account's identity key, device list and certificates, if the requester may see them:
        the account itself, someone who shares a conversation with it, or either side of a
        supervisor grant in force (the participants wrap to the supervisor's devices; the
        supervisor verifies the grant and the senders)."""
        async with self.database.read() as conn:
            if requester != account_id and not await linked(conn, requester, account_id, now_ms):
                return None
            account = await AccountStore(conn).get(account_id)
            devices = await DeviceStore(conn).of_accounts([account_id])
        return PublishedDevices(
            account_id=account_id,
            identity_key=account.identity_key,
            device_list=account.device_list,
            certificates={d.id: d.certificate for d in devices},
        )


_MAX_LISTED_DEVICES = 32  # device ids named in one audit event; counts are always recorded


def _published_event(
    account: Account,
    list_version: int,
    added: list[uuid.UUID],
    revoked: list[uuid.UUID],
    source: Source | None,
) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.DEVICES_PUBLISHED,
        outcome=Outcome.SUCCESS,
        actor=Actor(account.id, account.username, account.role.value),
        subject=Subject(account.id, account.username),
        resource=f"device-list:{list_version}",
        purpose="device management",
        source=source or Source(),
        details={
            "identity_key": "first_published" if account.identity_key is None else "unchanged",
            "added": tuple(str(d) for d in added[:_MAX_LISTED_DEVICES]),
            "added_count": len(added),
            "revoked": tuple(str(d) for d in revoked[:_MAX_LISTED_DEVICES]),
            "revoked_count": len(revoked),
        },
    )
