"""members: the point ledger (append-only) and delivery fees waived by level

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 07:30:00.000000
"""

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _role() -> str:
    role = os.environ.get("O2O_DB_RUNTIME_ROLE", "o2o_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"O2O_DB_RUNTIME_ROLE is not a plain role name: {role!r}")
    return role


def upgrade() -> None:
    op.create_table(
        "member_point_entries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("spend_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("accrual_id", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('accrual', 'reversal', 'expiry')",
            name=op.f("ck_member_point_entries_kind_known"),
        ),
        sa.CheckConstraint(
            "(kind = 'accrual' AND points >= 0 AND spend_minor >= 0 AND order_id IS NOT NULL"
            " AND expires_at IS NOT NULL)"
            " OR (kind = 'reversal' AND points <= 0 AND spend_minor <= 0 AND order_id IS NOT NULL)"
            " OR (kind = 'expiry' AND points <= 0 AND spend_minor = 0 AND accrual_id IS NOT NULL)",
            name=op.f("ck_member_point_entries_signs_by_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["accrual_id"],
            ["member_point_entries.id"],
            name=op.f("fk_member_point_entries_accrual_id_member_point_entries"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_member_point_entries_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_member_point_entries_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_point_entries")),
        sa.UniqueConstraint("accrual_id", name=op.f("uq_member_point_entries_accrual_id")),
        sa.UniqueConstraint("source_key", name=op.f("uq_member_point_entries_source_key")),
    )
    op.create_index(
        "ix_member_point_entries_user_at", "member_point_entries", ["user_id", "at"], unique=False
    )
    op.create_index(
        "ix_member_point_entries_order", "member_point_entries", ["order_id"], unique=False
    )
    op.create_index(
        "ix_member_point_entries_expires_at",
        "member_point_entries",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("kind = 'accrual'"),
    )
    op.create_table(
        "member_delivery_waivers",
        sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_minor > 0", name=op.f("ck_member_delivery_waivers_amount_positive")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_member_delivery_waivers_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_member_delivery_waivers_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_member_delivery_waivers")),
    )
    op.create_index(
        op.f("ix_member_delivery_waivers_user_id"),
        "member_delivery_waivers",
        ["user_id"],
        unique=False,
    )
    # The point ledger is append-only for the runtime role: the balance is the sum of its rows,
    # so a rewritten row would be a rewritten balance.
    role = _role()
    op.execute(
        f"DO $$ BEGIN\n  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN\n"
        f"    EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON member_point_entries FROM {role}';\n"
        "  END IF;\nEND $$"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_member_delivery_waivers_user_id"), table_name="member_delivery_waivers")
    op.drop_table("member_delivery_waivers")
    op.drop_index(
        "ix_member_point_entries_expires_at",
        table_name="member_point_entries",
        postgresql_where=sa.text("kind = 'accrual'"),
    )
    op.drop_index("ix_member_point_entries_order", table_name="member_point_entries")
    op.drop_index("ix_member_point_entries_user_at", table_name="member_point_entries")
    op.drop_table("member_point_entries")
