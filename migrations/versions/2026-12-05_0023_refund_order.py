"""refunds: the order each refund is for (a part of a split order has its own refunds from the
one payment; the rows before this are for their payment's order)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refunds", sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.execute(
        "UPDATE refunds r SET order_id = p.order_id FROM payments p WHERE p.id = r.payment_id"
    )
    op.alter_column("refunds", "order_id", nullable=False)
    op.create_foreign_key(
        op.f("fk_refunds_order_id_orders"),
        "refunds",
        "orders",
        ["order_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(op.f("ix_refunds_order_id"), "refunds", ["order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_refunds_order_id"), table_name="refunds")
    op.drop_constraint(op.f("fk_refunds_order_id_orders"), "refunds", type_="foreignkey")
    op.drop_column("refunds", "order_id")
