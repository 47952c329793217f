"""Supervisor grants: the therapist signs, the server checks, records, and shows everyone.

A grant makes a supervisor a reader of one conversation for a bounded time; it exists only as a
record signed by the therapist's device (and, when policy requires, co-signed by the client's),
which the server verifies but cannot create or extend. Creating or ending a grant queues a system
event to every participant's devices in the same transaction, so the client is never unaware of
an access. Every supervisor read (history, key shares; live delivery is in delivery.py) is
audited in the transaction of the read: no audit entry, no data.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from collections.abc import Sequence

from securemsg.audit.events import Actor, AuditAction, AuditEvent, Outcome, Source, Subject
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.grants import verify_consent, verify_grant, verify_key_share
from securemsg.protocol.errors import ErrorCode, ProtocolError
from securemsg.protocol.grants import parse_consent, parse_grant, parse_key_share
from securemsg.server.delivery import Delivery, Push
from securemsg.server.login import Principal
from securemsg.settings import Settings
from securemsg.storage.accounts import AccountStore, Role
from securemsg.storage.audit import AuditLog
from securemsg.storage.conversations import ConversationStore
from securemsg.storage.database import Connection, Database
from securemsg.storage.devices import DeviceStore
from securemsg.storage.errors import NotFound
from securemsg.storage.grants import GrantStore, StoredGrant
from securemsg.storage.history import HistoryItem, HistoryStore

GRANT_EVENT = "grant"
GRANT_ENDED_EVENT = "grant_ended"
SUPERVISION = "clinical supervision"


class GrantRefused(ProtocolError):
    code = ErrorCode.BAD_GRANT


class GrantService:
    def __init__(self, database: Database, settings: Settings, delivery: Delivery) -> None:
        self.database = database
        self.delivery = delivery
        self.max_grant_ms = int(settings.max_grant_seconds * 1000)
        self.require_consent = settings.grants_require_client_consent
        self.history_page = settings.backlog_page_envelopes
        self.max_key_shares = settings.max_key_shares_per_request

    # -- granting and ending --------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        record: bytes,
        consent: bytes | None,
        *,
        source: Source,
        now_ms: int,
    ) -> StoredGrant:
        pushes: list[Push] = []
        async with self.database.write() as conn:
            members = await _members(conn, conversation_id)
            if members.get(principal.account_id) != "therapist":
                raise GrantRefused(
                    "only the conversation's therapist can grant access", code=ErrorCode.FORBIDDEN
                )
            grant = parse_grant(record)
            devices = DeviceStore(conn)
            signer = await devices.get(uuid.UUID(bytes=grant.therapist_device))
            if signer is None or signer.account_id != principal.account_id or not signer.active:
                raise GrantRefused("grant names a device that is not an active device of yours")
            try:
                verify_grant(record, signer.signing_key)
            except InvalidSignature as exc:
                raise GrantRefused(str(exc), code=ErrorCode.BAD_SIGNATURE) from None
            if (
                grant.conversation_id != conversation_id.bytes
                or grant.therapist_account != principal.account_id.bytes
            ):
                raise GrantRefused("grant is for another conversation or therapist")
            if grant.until_ms <= now_ms:
                raise GrantRefused("grant has already ended")
            if grant.until_ms - grant.from_ms > self.max_grant_ms:
                raise GrantRefused(
                    f"grant is longer than the {self.max_grant_ms // 1000}-second limit"
                )
            supervisor_id = uuid.UUID(bytes=grant.supervisor_account)
            try:
                supervisor = await AccountStore(conn).get(supervisor_id)
            except NotFound:
                raise GrantRefused("grant names no supervisor account") from None
            if supervisor.role is not Role.SUPERVISOR or supervisor.disabled:
                raise GrantRefused("grant names an account that is not an active supervisor")
            client_id = next(a for a, role in members.items() if role == "client")
            if consent is not None or self.require_consent:
                await self._check_consent(
                    conn, grant_raw=record, consent=consent, client_id=client_id
                )
            stored = StoredGrant(
                id=uuid.UUID(bytes=grant.grant_id),
                conversation_id=conversation_id,
                supervisor_id=supervisor_id,
                therapist_id=principal.account_id,
                therapist_device=signer.id,
                from_ms=grant.from_ms,
                until_ms=grant.until_ms,
                include_history=grant.include_history,
                record=record,
                consent=consent,
                created_ms=now_ms,
                revoked_ms=None,
                revoked_by=None,
            )
            store = GrantStore(conn)
            if await store.get(stored.id) is not None:
                raise GrantRefused("a grant with this id exists")
            await store.add(stored)
            pushes = await self._announce(
                conn, stored, GRANT_EVENT, record + (consent or b""), members, signer.id, now_ms
            )
            await AuditLog(conn).record(
                _event(
                    AuditAction.SUPERVISOR_GRANT,
                    Outcome.SUCCESS,
                    principal,
                    stored,
                    client_id,
                    source,
                    {
                        "supervisor": supervisor.username,
                        "from_ms": stored.from_ms,
                        "until_ms": stored.until_ms,
                        "history": stored.include_history,
                    },
                ),
                now_ms=now_ms,
            )
        self.delivery.on_committed(pushes)
        return stored

    async def revoke(
        self, principal: Principal, grant_id: uuid.UUID, *, source: Source, now_ms: int
    ) -> StoredGrant:
        """End a grant early: its therapist can, and so can the conversation's client."""
        async with self.database.write() as conn:
            store = GrantStore(conn)
            stored = await store.get(grant_id)
            members = {} if stored is None else await _members(conn, stored.conversation_id)
            if stored is None or members.get(principal.account_id) not in ("therapist", "client"):
                raise GrantRefused("no such grant", code=ErrorCode.NOT_FOUND)
            if not await store.revoke(grant_id, by=principal.account_id, now_ms=now_ms):
                raise GrantRefused("grant was already ended")
            ended = dataclasses.replace(stored, revoked_ms=now_ms, revoked_by=principal.account_id)
            data = ended.id.bytes + struct.pack(">Q", now_ms)
            pushes = await self._announce(
                conn, ended, GRANT_ENDED_EVENT, data, members, stored.therapist_device, now_ms
            )
            client_id = next(a for a, role in members.items() if role == "client")
            await AuditLog(conn).record(
                _event(
                    AuditAction.SUPERVISOR_REVOKE,
                    Outcome.SUCCESS,
                    principal,
                    ended,
                    client_id,
                    source,
                    {},
                ),
                now_ms=now_ms,
            )
        self.delivery.on_committed(pushes)
        return ended

    async def of_conversation(
        self, principal: Principal, conversation_id: uuid.UUID
    ) -> list[StoredGrant]:
        """The grants of a conversation, for its participants and the supervisors it names."""
        async with self.database.read() as conn:
            members = await _members(conn, conversation_id)
            found = await GrantStore(conn).of_conversation(conversation_id)
        if principal.account_id in members:
            return found
        return [g for g in found if g.supervisor_id == principal.account_id]

    # -- supervisor reads -------------------------------------------------------------------

    async def history(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        *,
        after_id: int,
        source: Source,
        now_ms: int,
    ) -> list[HistoryItem]:
        """Stored envelopes of a conversation, oldest first, after `after_id`.

        Participants read their own conversation. A supervisor reads only under a grant in force
        that includes history, and each read is audited in its transaction.
        """
        async with self.database.write() as conn:
            members = await _members(conn, conversation_id)
            supervised = principal.role is Role.SUPERVISOR and principal.account_id not in members
            if not members or (principal.account_id not in members and not supervised):
                raise GrantRefused("no such conversation", code=ErrorCode.NOT_FOUND)
            if supervised:
                grant = await self._grant_in_force(conn, principal, conversation_id, now_ms)
                if grant is None or not grant.include_history:
                    refused = True
                else:
                    refused = False
                    items = await _history(conn, conversation_id, after_id, self.history_page)
                    client_id = next(a for a, role in members.items() if role == "client")
                    await AuditLog(conn).record(
                        _event(
                            AuditAction.SUPERVISOR_HISTORY,
                            Outcome.SUCCESS,
                            principal,
                            grant,
                            client_id,
                            source,
                            {"envelopes": len(items), "after_id": after_id},
                        ),
                        now_ms=now_ms,
                    )
                    return items
            else:
                return await _history(conn, conversation_id, after_id, self.history_page)
        if refused:
            await self._record_denied(
                AuditAction.SUPERVISOR_HISTORY, principal, conversation_id, source, now_ms
            )
        raise GrantRefused("no grant in force that includes history", code=ErrorCode.NO_GRANT)

    async def add_key_shares(
        self, principal: Principal, grant_id: uuid.UUID, shares: Sequence[bytes], *, now_ms: int
    ) -> int:
        """The therapist's device re-wraps stored content keys to the supervisor's devices."""
        if len(shares) > self.max_key_shares:
            raise GrantRefused(f"more than {self.max_key_shares} key shares in one request")
        async with self.database.write() as conn:
            grant = await GrantStore(conn).get(grant_id)
            if grant is None or grant.therapist_id != principal.account_id:
                raise GrantRefused("no such grant", code=ErrorCode.NOT_FOUND)
            if not grant.active_at(now_ms) or not grant.include_history:
                raise GrantRefused(
                    "grant is not in force or does not include history", code=ErrorCode.NO_GRANT
                )
            devices = DeviceStore(conn)
            supervisor_devices = {
                d.id.bytes for d in await devices.of_accounts([grant.supervisor_id])
            }
            mine = {d.id.bytes: d for d in await devices.of_accounts([principal.account_id])}
            messages = await _message_ids(conn, grant.conversation_id)
            rows = []
            for raw in shares:
                share = parse_key_share(raw)
                signer = mine.get(share.therapist_device)
                if signer is None:
                    raise GrantRefused("key share is signed by a device that is not yours")
                try:
                    verify_key_share(raw, signer.signing_key)
                except InvalidSignature as exc:
                    raise GrantRefused(str(exc), code=ErrorCode.BAD_SIGNATURE) from None
                if (
                    share.grant_id != grant_id.bytes
                    or share.supervisor_device not in supervisor_devices
                ):
                    raise GrantRefused(
                        "key share is for another grant or not for the supervisor's device"
                    )
                if share.message_id not in messages:
                    raise GrantRefused("key share names no message of this conversation")
                rows.append(
                    (grant_id, share.message_id, uuid.UUID(bytes=share.supervisor_device), raw)
                )
            await GrantStore(conn).add_key_shares(rows, now_ms=now_ms)
        return len(rows)

    async def key_shares(
        self,
        principal: Principal,
        grant_id: uuid.UUID,
        device_id: uuid.UUID,
        *,
        source: Source,
        now_ms: int,
    ) -> list[bytes]:
        """A supervisor device fetches its key shares: audited, and only under a grant in force."""
        async with self.database.write() as conn:
            grant = await GrantStore(conn).get(grant_id)
            if grant is None or grant.supervisor_id != principal.account_id:
                raise GrantRefused("no such grant", code=ErrorCode.NOT_FOUND)
            if grant.active_at(now_ms) and grant.include_history:
                device = await DeviceStore(conn).get(device_id)
                if device is None or device.account_id != principal.account_id or not device.active:
                    raise GrantRefused(
                        "no active device with that id on this account", code=ErrorCode.BAD_DEVICE
                    )
                shares = await GrantStore(conn).key_shares_for(grant_id, device_id)
                members = await _members(conn, grant.conversation_id)
                client_id = next(a for a, role in members.items() if role == "client")
                await AuditLog(conn).record(
                    _event(
                        AuditAction.SUPERVISOR_KEY_SHARES,
                        Outcome.SUCCESS,
                        principal,
                        grant,
                        client_id,
                        source,
                        {"key_shares": len(shares), "device": str(device_id)},
                    ),
                    now_ms=now_ms,
                )
                return shares
        await self._record_denied(
            AuditAction.SUPERVISOR_KEY_SHARES, principal, grant.conversation_id, source, now_ms
        )
        raise GrantRefused(
            "grant is not in force or does not include history", code=ErrorCode.NO_GRANT
        )

    # -- helpers ------------------------------------------------------------------------------

    async def _check_consent(
        self,
        conn: Connection,
        *,
        grant_raw: bytes,
        consent: bytes | None,
        client_id: uuid.UUID,
    ) -> None:
        if consent is None:
            raise GrantRefused("policy requires the client's consent on every grant")
        parsed = parse_consent(consent)
        device = await DeviceStore(conn).get(uuid.UUID(bytes=parsed.client_device))
        if (
            device is None
            or device.account_id != client_id
            or parsed.client_account != client_id.bytes
        ):
            raise GrantRefused("consent is not from the conversation's client")
        try:
            verify_consent(consent, parse_grant(grant_raw), device.signing_key)
        except InvalidSignature as exc:
            raise GrantRefused(str(exc), code=ErrorCode.BAD_SIGNATURE) from None

    async def _announce(
        self,
        conn: Connection,
        grant: StoredGrant,
        kind: str,
        data: bytes,
        members: dict[uuid.UUID, str],
        sender_device: uuid.UUID,
        now_ms: int,
    ) -> list[Push]:
        readers = [*members, grant.supervisor_id]
        devices = [d.id for d in await DeviceStore(conn).of_accounts(readers)]
        event_id = grant.id.bytes if kind == GRANT_EVENT else _ended_id(grant.id)
        return await self.delivery.queue_event(
            conn,
            conversation_id=grant.conversation_id,
            event_id=event_id,
            kind=kind,
            data=data,
            sender_device=sender_device,
            recipients=devices,
            now_ms=now_ms,
        )

    async def _grant_in_force(
        self, conn: Connection, principal: Principal, conversation_id: uuid.UUID, now_ms: int
    ) -> StoredGrant | None:
        active = await GrantStore(conn).active(
            [conversation_id], now_ms=now_ms, supervisor_id=principal.account_id
        )
        return max(active, key=lambda g: (g.include_history, g.until_ms), default=None)

    async def _record_denied(
        self,
        action: str,
        principal: Principal,
        conversation_id: uuid.UUID,
        source: Source,
        now_ms: int,
    ) -> None:
        async with self.database.write() as conn:
            await AuditLog(conn).record(
                AuditEvent(
                    action=action,
                    outcome=Outcome.DENIED,
                    actor=Actor(principal.account_id, principal.username, principal.role.value),
                    resource=f"conversation:{conversation_id}",
                    purpose=SUPERVISION,
                    source=source,
                    details={"reason": "no grant in force"},
                ),
                now_ms=now_ms,
            )


def _ended_id(grant_id: uuid.UUID) -> bytes:
    # The grant_ended event needs its own (conversation, message id) key: flip the version nibble.
    raw = bytearray(grant_id.bytes)
    raw[6] ^= 0xF0
    return bytes(raw)


def _event(
    action: str,
    outcome: Outcome,
    principal: Principal,
    grant: StoredGrant,
    client_id: uuid.UUID,
    source: Source,
    details: dict[str, str | int | bool | None],
) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor=Actor(principal.account_id, principal.username, principal.role.value),
        subject=Subject(client_id),
        resource=f"grant:{grant.id}",
        purpose=SUPERVISION,
        source=source,
        details={"conversation": str(grant.conversation_id), **details},
    )


async def _members(conn: Connection, conversation_id: uuid.UUID) -> dict[uuid.UUID, str]:
    return await ConversationStore(conn).member_roles(conversation_id)


async def _history(
    conn: Connection, conversation_id: uuid.UUID, after_id: int, limit: int
) -> list[HistoryItem]:
    return await HistoryStore(conn).page(conversation_id, after_id=after_id, limit=limit)


async def _message_ids(conn: Connection, conversation_id: uuid.UUID) -> set[bytes]:
    return await HistoryStore(conn).message_ids(conversation_id)
