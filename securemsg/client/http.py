"""The server's HTTP API (docs/protocol.md §2), as typed calls that raise only `ClientError`s.

Bodies are parsed here and nowhere else; a transport failure becomes `ConnectionLost`, an error
answer `AuthenticationError` (401) or `RequestFailed` with the wire code.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from securemsg.client.conversations import Member
from securemsg.client.disclosures import Disclosure, parse_disclosures
from securemsg.client.errors import AuthenticationError, ClientError, ConnectionLost, RequestFailed
from securemsg.client.events import AccountId

MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    account: AccountId
    username: str
    role: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: uuid.UUID
    created_ms: int
    members: list[Member]


@dataclass(frozen=True, slots=True)
class PublishedDevices:
    account: uuid.UUID
    identity_key: bytes | None
    device_list: bytes | None


@dataclass(frozen=True, slots=True)
class GrantListing:
    """One grant as `GET /v1/conversations/{id}/grants` lists it; only `record` is signed."""

    id: uuid.UUID
    conversation: uuid.UUID
    supervisor: uuid.UUID
    therapist: uuid.UUID
    from_ms: int
    until_ms: int
    include_history: bool
    record: bytes
    consent: bytes | None
    revoked_ms: int | None
    active: bool


@dataclass(frozen=True, slots=True)
class HistoryItem:
    id: int
    kind: str
    received_ms: int
    envelope: bytes


class Api:
    """One HTTP connection pool to the server; `token` authenticates the calls after login."""

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_seconds, follow_redirects=False
        )
        self.token: str | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def login(self, username: str, password: str) -> Session:
        body = await self._call(
            "POST", "/v1/login", json={"username": username, "password": password}
        )
        try:
            session = Session(
                token=_str(body, "token"),
                account=AccountId(uuid.UUID(_str(body, "account"))),
                username=_str(body, "username"),
                role=_str(body, "role"),
                expires_ms=_int(body, "expires_ms"),
            )
        except ValueError:
            raise ClientError("login answer has a malformed account id") from None
        self.token = session.token
        return session

    async def logout(self) -> None:
        await self._call("POST", "/v1/logout")
        self.token = None

    async def conversations(self) -> list[ConversationRecord]:
        body = await self._call("GET", "/v1/conversations")
        items = body.get("conversations")
        if not isinstance(items, list):
            raise ClientError("conversations answer is malformed")
        try:
            return [
                ConversationRecord(
                    id=uuid.UUID(_str(item, "id")),
                    created_ms=_int(item, "created_ms"),
                    members=[
                        Member(
                            AccountId(uuid.UUID(_str(m, "account"))),
                            _str(m, "username"),
                            _str(m, "role"),
                        )
                        for m in _list(item, "members")
                    ],
                )
                for item in items
            ]
        except (ValueError, TypeError):
            raise ClientError("conversations answer is malformed") from None

    async def disclosures(self) -> list[Disclosure]:
        return parse_disclosures(await self._call("GET", "/v1/disclosures"))

    async def devices(self, account: uuid.UUID) -> PublishedDevices:
        body = await self._call("GET", f"/v1/accounts/{account}/devices")
        return PublishedDevices(
            account=account,
            identity_key=_optional_b64(body, "identity_key"),
            device_list=_optional_b64(body, "device_list"),
        )

    async def publish_devices(
        self, *, identity_key: bytes, device_list: bytes, certificates: list[bytes]
    ) -> int:
        body = await self._call(
            "PUT",
            "/v1/devices",
            json={
                "identity_key": _b64(identity_key),
                "device_list": _b64(device_list),
                "certificates": [_b64(c) for c in certificates],
            },
        )
        return _int(body, "list_version")

    # -- supervisor grants (docs/confidentiality.md) -----------------------------------------

    async def create_grant(
        self, conversation: uuid.UUID, record: bytes, consent: bytes | None
    ) -> GrantListing:
        body = await self._call(
            "POST",
            f"/v1/conversations/{conversation}/grants",
            json={"grant": _b64(record), "consent": None if consent is None else _b64(consent)},
        )
        return _grant_listing(body)

    async def grants(self, conversation: uuid.UUID) -> list[GrantListing]:
        body = await self._call("GET", f"/v1/conversations/{conversation}/grants")
        return [_grant_listing(item) for item in _list(body, "grants")]

    async def revoke_grant(self, grant_id: uuid.UUID) -> GrantListing:
        return _grant_listing(await self._call("POST", f"/v1/grants/{grant_id}/revoke"))

    async def history(self, conversation: uuid.UUID, *, after: int) -> list[HistoryItem]:
        body = await self._call("GET", f"/v1/conversations/{conversation}/history?after={after}")
        try:
            return [
                HistoryItem(
                    id=_int(item, "id"),
                    kind=_str(item, "kind"),
                    received_ms=_int(item, "received_ms"),
                    envelope=_required_b64(item, "envelope"),
                )
                for item in _list(body, "items")
            ]
        except (TypeError, AttributeError):
            raise ClientError("history answer is malformed") from None

    async def add_key_shares(self, grant_id: uuid.UUID, shares: list[bytes]) -> int:
        body = await self._call(
            "POST",
            f"/v1/grants/{grant_id}/key-shares",
            json={"shares": [_b64(share) for share in shares]},
        )
        return _int(body, "stored")

    async def key_shares(self, grant_id: uuid.UUID, device: uuid.UUID) -> list[bytes]:
        body = await self._call("GET", f"/v1/grants/{grant_id}/key-shares?device={device}")
        shares = _list(body, "shares")
        return [_required_b64({"share": share}, "share") for share in shares]

    async def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self._http.request(method, path, json=json, headers=headers)
        except httpx.TransportError as error:
            raise ConnectionLost(f"{method} {path}: cannot reach the server ({error})") from error
        except httpx.HTTPError as error:
            raise ClientError(f"{method} {path}: {error}") from error
        if response.status_code == 204:
            return {}
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ClientError(
                f"{method} {path}: answer of {len(response.content)} bytes is too large"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if response.status_code >= 500:
                raise ConnectionLost(f"{method} {path}: server error {response.status_code}")
            raise ClientError(f"{method} {path}: answer is not a JSON object")
        if response.is_success:
            return body
        detail = body.get("error")
        code = str(detail.get("code", "")) if isinstance(detail, dict) else ""
        message = str(detail.get("message", "")) if isinstance(detail, dict) else ""
        text = f"{method} {path}: {message or 'refused'} ({code or response.status_code})"
        if response.status_code == 401:
            raise AuthenticationError(text)
        if response.status_code in (502, 503, 504):
            raise ConnectionLost(text)
        raise RequestFailed(text, code=code, status=response.status_code)


def _str(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise ClientError(f"server answer lacks the string {name!r}")
    return value


def _int(body: Any, name: str) -> int:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ClientError(f"server answer lacks the integer {name!r}")
    return value


def _list(body: Any, name: str) -> list[Any]:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, list):
        raise ClientError(f"server answer lacks the list {name!r}")
    return value


def _optional_b64(body: dict[str, Any], name: str) -> bytes | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ClientError(f"server answer field {name!r} is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(f"server answer field {name!r} is not base64") from None


def _required_b64(body: dict[str, Any], name: str) -> bytes:
    value = _optional_b64(body, name)
    if value is None:
        raise ClientError(f"server answer lacks the base64 field {name!r}")
    return value


def _grant_listing(body: Any) -> GrantListing:
    if not isinstance(body, dict):
        raise ClientError("grant answer is not an object")
    revoked = body.get("revoked_ms")
    history = body.get("include_history")
    active = body.get("active")
    if (revoked is not None and not isinstance(revoked, int)) or not isinstance(history, bool):
        raise ClientError("grant answer is malformed")
    if not isinstance(active, bool):
        raise ClientError("grant answer is malformed")
    try:
        return GrantListing(
            id=uuid.UUID(_str(body, "id")),
            conversation=uuid.UUID(_str(body, "conversation")),
            supervisor=uuid.UUID(_str(body, "supervisor")),
            therapist=uuid.UUID(_str(body, "therapist")),
            from_ms=_int(body, "from_ms"),
            until_ms=_int(body, "until_ms"),
            include_history=history,
            record=_required_b64(body, "record"),
            consent=_optional_b64(body, "consent"),
            revoked_ms=revoked,
            active=active,
        )
    except ValueError:
        raise ClientError("grant answer has a malformed id") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
