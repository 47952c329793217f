"""The audit log: leaves, readable events, complete tree nodes and signed checkpoints.

All four tables are append-only. Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL):
they stop mistakes and an application bug, not an attacker who owns the database, which is what
`securemsg audit verify` is for. docs/audit.md says how to also revoke the privileges.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

AUDIT_TABLES = ("audit_leaves", "audit_events", "audit_nodes", "audit_checkpoints")
LOOKUPS = ("actor_id", "actor_name", "subject_id", "subject_name", "action", "purpose", "outcome")


def upgrade() -> None:
    op.create_table(
        "audit_leaves",
        sa.Column("leaf_index", RowId, autoincrement=False, nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_audit_leaves"),
    )
    op.create_table(
        "audit_events",
        sa.Column("leaf_index", RowId, autoincrement=False, nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_name", sa.String(64), nullable=True),
        sa.Column("actor_role", sa.String(16), nullable=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("subject_name", sa.String(64), nullable=True),
        sa.Column("resource", sa.String(200), nullable=True),
        sa.Column("purpose", sa.String(200), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("salt", sa.LargeBinary(16), nullable=False),
        sa.ForeignKeyConstraint(
            ["leaf_index"],
            ["audit_leaves.leaf_index"],
            name="fk_audit_events_leaf_index_audit_leaves",
        ),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_time_ms", "audit_events", ["time_ms"])
    for column in LOOKUPS:
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column, "leaf_index"])
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("node_index", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "node_index", name="pk_audit_nodes"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", RowId, autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_audit_checkpoints"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_append_only()
    else:
        _sqlite_append_only()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in AUDIT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS securemsg_audit_append_only()")
    else:
        for table in AUDIT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for table in reversed(AUDIT_TABLES):
        op.drop_table(table)


def _postgresql_append_only() -> None:
    op.execute(
        """
        CREATE FUNCTION securemsg_audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in AUDIT_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION securemsg_audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION securemsg_audit_append_only()"
        )


def _sqlite_append_only() -> None:
    for table in AUDIT_TABLES:
        for operation in ("update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation} BEFORE {operation.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only: "
                f"{operation.upper()} refused'); END"
            )
