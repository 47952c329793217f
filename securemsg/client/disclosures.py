"""The accounting of disclosures (HIPAA §164.528): what the server handed to an authority under a
legal request that covered this account, as `Client.disclosures()` returns it.

A disclosure is only ever ciphertext and routing metadata (docs/legal-requests.md). An entry
whose notice delay has not ended yet is not listed; it appears by itself once the delay ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from securemsg.client.errors import ClientError


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One entry: when (`date_ms`), to whom (`recipient`, the authority), what
    (`description`) and why (`purpose`, the legal basis), under legal request `request_id`."""

    request_id: uuid.UUID
    date_ms: int
    recipient: str
    description: str
    purpose: str


def parse_disclosures(body: dict[str, Any]) -> list[Disclosure]:
    """The entries of a `GET /v1/disclosures` answer; `ClientError` if it is malformed."""
    items = body.get("disclosures")
    if not isinstance(items, list):
        raise ClientError("disclosures answer is malformed")
    found = []
    for item in items:
        if not isinstance(item, dict):
            raise ClientError("disclosures answer is malformed")
        date_ms = item.get("date_ms")
        texts = [item.get(name) for name in ("id", "recipient", "description", "purpose")]
        if not isinstance(date_ms, int) or isinstance(date_ms, bool):
            raise ClientError("disclosure lacks its date")
        if not all(isinstance(text, str) for text in texts):
            raise ClientError("disclosure lacks a text field")
        request_id, recipient, description, purpose = (str(text) for text in texts)
        try:
            parsed_id = uuid.UUID(request_id)
        except ValueError:
            raise ClientError("disclosure has a malformed request id") from None
        found.append(Disclosure(parsed_id, date_ms, recipient, description, purpose))
    return found
