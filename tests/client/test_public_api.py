"""The SDK's public names are pinned here and each is documented in docs/sdk.md."""

from __future__ import annotations

import re
from pathlib import Path

import securemsg.client
from securemsg.client.blocking import BlockingClient

SDK_DOC = Path(__file__).parents[2] / "docs" / "sdk.md"

PUBLIC = {
    "AccountId", "Anomaly", "AnomalyKind", "AuthenticationError", "CaughtUp", "Client",
    "ClientClosed", "ClientError", "ClientOptions", "ConnectionLost", "Conversation",
    "ConversationChanged", "ConversationId", "DeviceApproval", "DeviceChanged", "DeviceId",
    "DeviceInfo", "DeviceListRejected", "DeviceRequest", "DeviceRevoked", "Disclosure",
    "Displaced", "Event",
    "Gap", "GrantEndReason", "GrantEnded", "GrantId", "GrantInfo", "GrantRejected",
    "HistoryTampered", "IdentityChanged", "KdfParams", "KeystoreError", "KeystoreTampered",
    "Member",
    "SupervisorGranted",
    "Message", "MessageId", "PeerKeyChanged", "PeerUnavailable", "RequestFailed",
    "SafetyNumber", "SendFailed", "SendRefused", "Sent", "TrustError", "Undecryptable",
    "VerificationFailed", "WrongPassphrase",
}  # fmt: skip


def test_public_names_are_exactly_the_pinned_ones() -> None:
    assert set(securemsg.client.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(securemsg.client, name) is not None


def test_every_public_name_and_client_method_is_documented() -> None:
    text = re.sub(r"```.*?```", "", SDK_DOC.read_text(), flags=re.DOTALL)  # prose and tables
    spans = re.findall(r"`([^`]+)`", text)
    documented = {word for span in spans for word in re.findall(r"[A-Za-z_]+", span)}
    missing = PUBLIC - documented
    assert not missing, f"not in docs/sdk.md: {sorted(missing)}"
    methods = {
        name
        for name in vars(securemsg.client.Client)
        if not name.startswith("_") and name not in {"options"}
    }
    assert not methods - documented, sorted(methods - documented)
    blocking = {name for name in vars(BlockingClient) if not name.startswith("_")}
    assert not blocking - documented, sorted(blocking - documented)


def test_the_blocking_facade_offers_every_client_method() -> None:
    client = {name for name in vars(securemsg.client.Client) if not name.startswith("_")}
    blocking = {name for name in vars(BlockingClient) if not name.startswith("_")}
    assert client - blocking == {"connect"}  # the facade's constructor does what connect does


def test_every_sdk_error_is_a_client_error() -> None:
    for name in PUBLIC:
        value = getattr(securemsg.client, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, securemsg.client.ClientError), name
