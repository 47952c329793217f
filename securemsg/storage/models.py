"""The relational schema, as SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Times are integer milliseconds since the epoch (`*_ms`), passed in by callers. Ids are UUIDs except
envelope row ids and per-device sequence numbers, which are integers. Migrations in
storage/migrations/ must create exactly this schema; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
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
