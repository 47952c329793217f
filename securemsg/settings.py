"""The one settings object: every limit and option, with a safe default.

Values come from keyword arguments, then `SECUREMSG_<FIELD>` environment variables, then the
defaults below. docs/operations.md lists every field; a test keeps that list complete.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "SECUREMSG_"


@dataclasses.dataclass(frozen=True)
class Settings:
    # where things live
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: sqlite+aiosqlite:///<data_dir>/securemsg.db
    keys_dir: Path = Path("keys")
    redis_url: str = ""  # empty: in-process broker (single node)
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: str = ""
    tls_key: str = ""
    auto_migrate: bool = True
    log_level: str = "info"

    # WebSocket
    allowed_origins: tuple[str, ...] = ()  # empty: only same-origin or no Origin header
    max_frame_bytes: int = 131072
    max_json_depth: int = 4
    auth_deadline_seconds: float = 5.0
    idle_timeout_seconds: float = 300.0
    ping_interval_seconds: float = 20.0
    max_unauthenticated_sockets_per_address: int = 32
    max_sockets_per_account: int = 16
    outbound_queue_bytes: int = 1048576
    slow_reader_seconds: float = 10.0
    send_rate_per_second: float = 200.0
    send_burst: int = 400

    # envelopes and delivery
    max_envelope_bytes: int = 65536
    max_recipients: int = 32
    max_devices_per_account: int = 16
    max_grant_seconds: float = 86400.0 * 90
    grants_require_client_consent: bool = False
    max_key_shares_per_request: int = 1000
    clock_skew_seconds: float = 300.0
    max_batch_envelopes: int = 512
    signature_processes: int = 2  # check signatures of sends queued under load; 0: none
    backlog_page_envelopes: int = 256

    # login and sessions
    session_idle_seconds: float = 3600.0
    session_lifetime_seconds: float = 86400.0 * 7
    session_check_interval_seconds: float = 2.0
    login_attempts_per_account: int = 5
    login_attempts_per_address: int = 30
    login_window_seconds: float = 60.0
    max_concurrent_hashes: int = 2
    max_queued_logins: int = 64
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    max_password_bytes: int = 1024
    max_request_bytes: int = 65536
    request_timeout_seconds: float = 10.0  # for an HTTP request (head and body) to arrive

    # audit log (docs/audit.md)
    audit_origin: str = ""  # empty: the name of the first key in <keys_dir>/audit.key
    audit_integrate_interval_seconds: float = 1.0
    audit_integrate_max_leaves: int = 4096
    audit_max_page_events: int = 1000

    # legal requests, holds and retention (docs/legal-requests.md)
    legal_max_name_chars: int = 200  # authority, reference (at most 200: the column size)
    legal_max_text_chars: int = 500  # legal basis, decision note, hold reason (at most 500)
    legal_max_export_bytes: int = 64 * 1024 * 1024  # one export bundle
    legal_max_export_envelopes: int = 100_000
    legal_max_page_items: int = 100  # requests or holds per list page
    max_disclosures: int = 1000  # entries in one accounting of disclosures
    retention_interval_seconds: float = 60.0  # 0: no background retention task
    retention_undelivered_seconds: float = 30 * 86400.0  # 0: undelivered envelopes never expire
    retention_delivered_seconds: float = 30 * 86400.0  # 0: delivered envelopes are kept
    retention_batch_rows: int = 1000  # rows looked at per retention transaction

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'securemsg.db'}"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `overrides`, then the environment, then defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in overrides and overrides[field.name] is not None:
                values[field.name] = _coerce(field.name, field.type, overrides[field.name])
                continue
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(field.name, field.type, raw)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"setting {field.name} must not be negative, got {value}")
        if self.max_concurrent_hashes < 1:
            raise ValueError("setting max_concurrent_hashes must be at least 1")
        for name, column_chars in (("legal_max_name_chars", 200), ("legal_max_text_chars", 500)):
            if not 1 <= getattr(self, name) <= column_chars:
                raise ValueError(f"setting {name} must be between 1 and {column_chars}")


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    kind = str(annotation)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path":
            return Path(value)
        if kind.startswith("tuple"):
            if isinstance(value, tuple | list):
                return tuple(str(v) for v in value)
            return tuple(part.strip() for part in str(value).split(",") if part.strip())
        return str(value)
    except ValueError:
        raise ValueError(f"setting {name}: cannot read {value!r} as {kind}") from None
