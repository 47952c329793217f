"""Supervisor grants and key shares, legal requests and holds, system events in queues.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("envelopes") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), server_default="message", nullable=False))
    op.create_table(
        "grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("supervisor_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_device", sa.Uuid(), nullable=False),
        sa.Column("from_ms", sa.BigInteger(), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=False),
        sa.Column("include_history", sa.Boolean(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("consent", sa.LargeBinary(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_grants_conversation_id_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["supervisor_id"], ["accounts.id"], name="fk_grants_supervisor_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["accounts.id"], name="fk_grants_therapist_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
    )
    op.create_index("ix_grants_conversation_id", "grants", ["conversation_id"])
    op.create_index("ix_grants_supervisor_id", "grants", ["supervisor_id"])
    op.create_table(
        "key_shares",
        sa.Column("grant_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.LargeBinary(16), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], name="fk_key_shares_grant_id_grants"),
        sa.PrimaryKeyConstraint("grant_id", "message_id", "device_id", name="pk_key_shares"),
    )
    op.create_table(
        "legal_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filed_by", sa.Uuid(), nullable=False),
        sa.Column("filed_ms", sa.BigInteger(), nullable=False),
        sa.Column("authority", sa.String(200), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("legal_basis", sa.String(500), nullable=False),
        sa.Column("scope_account", sa.Uuid(), nullable=True),
        sa.Column("scope_conversation", sa.Uuid(), nullable=True),
        sa.Column("scope_from_ms", sa.BigInteger(), nullable=True),
        sa.Column("scope_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("notice_after_ms", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decided_ms", sa.BigInteger(), nullable=True),
        sa.Column("decision_note", sa.String(500), nullable=True),
        sa.Column("exported_ms", sa.BigInteger(), nullable=True),
        sa.Column("bundle", sa.LargeBinary(), nullable=True),
        sa.Column("bundle_sha256", sa.LargeBinary(32), nullable=True),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["filed_by"], ["accounts.id"], name="fk_legal_requests_filed_by_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_legal_requests"),
    )
    op.create_index("ix_legal_requests_scope_account", "legal_requests", ["scope_account"])
    op.create_index(
        "ix_legal_requests_scope_conversation", "legal_requests", ["scope_conversation"]
    )
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope_account", sa.Uuid(), nullable=True),
        sa.Column("scope_conversation", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("placed_by", sa.Uuid(), nullable=False),
        sa.Column("placed_ms", sa.BigInteger(), nullable=False),
        sa.Column("released_by", sa.Uuid(), nullable=True),
        sa.Column("released_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["placed_by"], ["accounts.id"], name="fk_legal_holds_placed_by_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_legal_holds"),
    )
    op.create_index("ix_legal_holds_scope_account", "legal_holds", ["scope_account"])
    op.create_index("ix_legal_holds_scope_conversation", "legal_holds", ["scope_conversation"])
    op.create_index("ix_envelopes_received_ms", "envelopes", ["received_ms", "id"])


def downgrade() -> None:
    op.drop_index("ix_envelopes_received_ms", "envelopes")
    for table in ("legal_holds", "legal_requests", "key_shares", "grants"):
        op.drop_table(table)
    with op.batch_alter_table("envelopes") as batch:
        batch.drop_column("kind")
