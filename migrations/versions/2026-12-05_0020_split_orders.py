"""split orders: one order paid once, filled in parts (orders) by several stores

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 07:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "split_orders",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["users.id"],
            name=op.f("fk_split_orders_patient_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_split_orders")),
    )
    op.create_index(
        op.f("ix_split_orders_patient_id"), "split_orders", ["patient_id"], unique=False
    )
    op.add_column(
        "orders", sa.Column("split_order_id", postgresql.UUID(as_uuid=True), nullable=True)
    )
    op.add_column("orders", sa.Column("split_position", sa.SmallInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_orders_split_order_id_split_orders"),
        "orders",
        "split_orders",
        ["split_order_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_index(op.f("ix_orders_split_order_id"), "orders", ["split_order_id"], unique=False)
    op.create_unique_constraint(
        "uq_orders_split_part", "orders", ["split_order_id", "split_position"]
    )
    op.create_check_constraint(
        op.f("ck_orders_split_part_positioned"),
        "orders",
        "(split_order_id IS NULL) = (split_position IS NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_orders_split_part_positioned"), "orders", type_="check")
    op.drop_constraint("uq_orders_split_part", "orders", type_="unique")
    op.drop_index(op.f("ix_orders_split_order_id"), table_name="orders")
    op.drop_constraint(op.f("fk_orders_split_order_id_split_orders"), "orders", type_="foreignkey")
    op.drop_column("orders", "split_position")
    op.drop_column("orders", "split_order_id")
    op.drop_index(op.f("ix_split_orders_patient_id"), table_name="split_orders")
    op.drop_table("split_orders")
