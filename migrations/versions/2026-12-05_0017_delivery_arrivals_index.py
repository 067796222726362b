"""the fleet's arrival count: delivery orders by release time

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # dispatch.fleet counts the delivery orders released around each store in the last half
    # hour, every minute: a range read on this index instead of a scan of every order.
    op.create_index(
        "ix_orders_delivery_released_at",
        "orders",
        ["released_at"],
        postgresql_where=sa.text("fulfillment = 'delivery' AND released_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_delivery_released_at", table_name="orders")
