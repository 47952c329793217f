"""The relational schema, as SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Times are integer milliseconds since the epoch (`*_ms`), passed in by callers. Ids are UUIDs except
envelope row ids and per-device sequence numbers, which are integers. Migrations in
storage/migrations/ must create exactly this schema; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants a bigint.
RowId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
    Column("identity_key", LargeBinary(32), nullable=True),
    Column("device_list", LargeBinary, nullable=True),
    Column("device_list_version", BigInteger, nullable=False, server_default="0"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("signing_key", LargeBinary(32), nullable=False),
    Column("encryption_key", LargeBinary(32), nullable=False),
    Column("certificate", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    # delivery queue bookkeeping: last allocated sequence, last acknowledged, and the highest
    # sequence removed unacknowledged by retention (a resume below it is answered with `gap`).
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("acked_seq", BigInteger, nullable=False, server_default="0"),
    Column("expired_seq", BigInteger, nullable=False, server_default="0"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("created_ms", BigInteger, nullable=False),
)

conversation_members = Table(
    "conversation_members",
    metadata,
    Column("conversation_id", Uuid, ForeignKey("conversations.id"), nullable=False),
    Column("account_id", Uuid, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("added_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("conversation_id", "account_id"),
)

envelopes = Table(
    "envelopes",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("conversation_id", Uuid, ForeignKey("conversations.id"), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("sender_device", Uuid, nullable=False),
    Column("sent_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    # "message" (an end-to-end encrypted envelope) or a system event every participant sees in
    # order with the messages: "grant" (a therapist-signed supervisor grant), "grant_ended".
    Column("kind", String(16), nullable=False, server_default="message"),
    UniqueConstraint("conversation_id", "message_id", name="uq_envelopes_conversation_message"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("device_id", Uuid, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("envelope_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("device_id", "seq"),
)
Index("ix_deliveries_envelope_id", deliveries.c.envelope_id)
# Retention walks old envelopes in (received_ms, id) order (server/retention.py).
Index("ix_envelopes_received_ms", envelopes.c.received_ms, envelopes.c.id)

# The audit log (docs/audit.md, "Storage and compliance API"). All four tables are append-only:
# migration 0002 adds triggers that refuse UPDATE and DELETE. `audit_leaves` is the tree's data
# (leaf i is row i, dense from 0); `audit_events` is the readable, prunable record of each leaf;
# `audit_nodes` holds every complete node; `audit_checkpoints` every signed tree head.
audit_leaves = Table(
    "audit_leaves",
    metadata,
    Column("leaf_index", RowId, primary_key=True, autoincrement=False),
    Column("leaf", LargeBinary, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "leaf_index",
        RowId,
        ForeignKey("audit_leaves.leaf_index"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("time_ms", BigInteger, nullable=False),
    Column("action", String(48), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor_id", Uuid, nullable=True),
    Column("actor_name", String(64), nullable=True),
    Column("actor_role", String(16), nullable=True),
    Column("subject_id", Uuid, nullable=True),
    Column("subject_name", String(64), nullable=True),
    Column("resource", String(200), nullable=True),
    Column("purpose", String(200), nullable=True),
    Column("address", String(64), nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("details", Text, nullable=False),
    Column("salt", LargeBinary(16), nullable=False),
)
Index("ix_audit_events_time_ms", audit_events.c.time_ms)
# (column, leaf_index): a filtered page after a cursor is one index range scan on both engines.
for _column in (
    "actor_id",
    "actor_name",
    "subject_id",
    "subject_name",
    "action",
    "purpose",
    "outcome",
):
    Index(f"ix_audit_events_{_column}", audit_events.c[_column], audit_events.c.leaf_index)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("node_index", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("level", "node_index"),
    sqlite_with_rowid=False,
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", RowId, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("signed_ms", BigInteger, nullable=False),
)

# Confidentiality controls (docs/confidentiality.md). A grant is the therapist-signed record that
# makes a supervisor a reader of one conversation for a bounded time; key shares are the
# therapist-signed re-wraps of stored content keys that let the supervisor read history.
grants = Table(
    "grants",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("conversation_id", Uuid, ForeignKey("conversations.id"), nullable=False, index=True),
    Column("supervisor_id", Uuid, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("therapist_id", Uuid, ForeignKey("accounts.id"), nullable=False),
    Column("therapist_device", Uuid, nullable=False),
    Column("from_ms", BigInteger, nullable=False),
    Column("until_ms", BigInteger, nullable=False),
    Column("include_history", Boolean, nullable=False),
    Column("record", LargeBinary, nullable=False),
    Column("consent", LargeBinary, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    Column("revoked_by", Uuid, nullable=True),
)

key_shares = Table(
    "key_shares",
    metadata,
    Column("grant_id", Uuid, ForeignKey("grants.id"), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("device_id", Uuid, nullable=False),
    Column("record", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("grant_id", "message_id", "device_id"),
)

legal_requests = Table(
    "legal_requests",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("filed_by", Uuid, ForeignKey("accounts.id"), nullable=False),
    Column("filed_ms", BigInteger, nullable=False),
    Column("authority", String(200), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("legal_basis", String(500), nullable=False),
    Column("scope_account", Uuid, nullable=True, index=True),
    Column("scope_conversation", Uuid, nullable=True, index=True),
    Column("scope_from_ms", BigInteger, nullable=True),
    Column("scope_until_ms", BigInteger, nullable=True),
    Column("notice_after_ms", BigInteger, nullable=True),
    Column("decided_by", Uuid, nullable=True),
    Column("decided_ms", BigInteger, nullable=True),
    Column("decision_note", String(500), nullable=True),
    Column("exported_ms", BigInteger, nullable=True),
    Column("bundle", LargeBinary, nullable=True),
    Column("bundle_sha256", LargeBinary(32), nullable=True),
    Column("closed_ms", BigInteger, nullable=True),
)

legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("scope_account", Uuid, nullable=True, index=True),
    Column("scope_conversation", Uuid, nullable=True, index=True),
    Column("reason", String(500), nullable=False),
    Column("placed_by", Uuid, ForeignKey("accounts.id"), nullable=False),
    Column("placed_ms", BigInteger, nullable=False),
    Column("released_by", Uuid, nullable=True),
    Column("released_ms", BigInteger, nullable=True),
)
