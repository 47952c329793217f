"""Legal holds: placed and released by compliance officers, every call audited.

While a hold is active, retention (server/retention.py) deletes nothing in its scope and the
account, or any member account of the held conversation, can't be deleted (server/admin.py).
Placing takes the hold lock (`HoldStore.lock`), so once `place` returns, no deletion that starts
later can miss the hold.
"""

from __future__ import annotations

import dataclasses
import uuid

from securemsg.audit.events import AuditAction
from securemsg.protocol.errors import ErrorCode
from securemsg.server.legal_calls import (
    Audited,
    Call,
    LegalRefused,
    Officer,
    Stores,
    bad_request,
    check_field,
    scope_subject,
)
from securemsg.settings import Settings
from securemsg.storage.database import Database
from securemsg.storage.legal import Hold, Scope

PURPOSE = "legal hold"


def hold_resource(hold_id: uuid.UUID) -> str:
    return f"legal-hold:{hold_id}"


class HoldService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.settings = settings
        self.audited = Audited(database)

    async def authorize(
        self, officer: Officer, action: AuditAction, hold_id: uuid.UUID | None, *, now_ms: int
    ) -> None:
        """Refuse (and record) a caller without the compliance role, before anything else."""
        where = None if hold_id is None else hold_resource(hold_id)
        await self.audited.authorize(Call(officer, action, PURPOSE, where), now_ms=now_ms)

    async def place(
        self,
        officer: Officer,
        *,
        account: uuid.UUID | None,
        conversation: uuid.UUID | None,
        reason: str,
        now_ms: int,
    ) -> Hold:
        """Hold an account (and every conversation it is a member of) or one conversation."""

        async def work(stores: Stores, call: Call) -> Hold:
            check_field("reason", reason, self.settings.legal_max_text_chars)
            if (account is None) == (conversation is None):
                raise bad_request("a hold names exactly one of an account or a conversation")
            await stores.holds.lock()
            call.subject = await scope_subject(stores.scope, Scope(account, conversation))
            hold = Hold(uuid.uuid4(), account, conversation, reason, officer.account_id, now_ms)
            await stores.holds.insert(hold)
            call.resource = hold_resource(hold.id)
            call.details = {"reason": reason}
            return hold

        call = Call(officer, AuditAction.HOLD_PLACED, PURPOSE)
        return await self.audited.run(call, work, now_ms=now_ms)

    async def release(self, officer: Officer, hold_id: uuid.UUID, *, now_ms: int) -> Hold:
        """End a hold; retention may then delete what it covered."""

        async def work(stores: Stores, call: Call) -> Hold:
            hold = await stores.holds.get(hold_id)
            if hold is None:
                raise LegalRefused(f"no legal hold {hold_id}", code=ErrorCode.NOT_FOUND)
            scope = Scope(hold.scope_account, hold.scope_conversation)
            call.subject = await scope_subject(stores.scope, scope)
            released_by = officer.account_id
            if not await stores.holds.release(hold_id, by=released_by, now_ms=now_ms):
                raise LegalRefused("the hold was already released", code=ErrorCode.WRONG_STATE)
            return dataclasses.replace(hold, released_by=released_by, released_ms=now_ms)

        call = Call(officer, AuditAction.HOLD_RELEASED, PURPOSE, hold_resource(hold_id))
        return await self.audited.run(call, work, now_ms=now_ms)

    async def page(
        self,
        officer: Officer,
        *,
        active_only: bool,
        after: uuid.UUID | None,
        limit: int,
        now_ms: int,
    ) -> tuple[list[Hold], uuid.UUID | None]:
        """Holds, newest first, after the one named by the cursor `after`; and the next cursor
        (None on the last page)."""
        limit = max(1, min(limit, self.settings.legal_max_page_items))

        async def work(stores: Stores, call: Call) -> tuple[list[Hold], uuid.UUID | None]:
            before = None if after is None else await stores.holds.get(after)
            if after is not None and before is None:
                raise LegalRefused(f"no legal hold {after}", code=ErrorCode.NOT_FOUND)
            found = await stores.holds.page(active_only=active_only, before=before, limit=limit + 1)
            call.details = {"returned": len(found[:limit]), "active_only": active_only}
            return found[:limit], found[limit - 1].id if len(found) > limit else None

        call = Call(officer, AuditAction.LEGAL_READ, PURPOSE)
        return await self.audited.run(call, work, now_ms=now_ms)
