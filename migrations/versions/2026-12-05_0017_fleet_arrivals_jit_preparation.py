"""the fleet's arrivals and just-in-time preparation: delivery orders by release time, the hold
a store's fleet implies, and the advised start of each delivery

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
    op.add_column(
        "store_fleet_load",
        sa.Column("hold_minutes", sa.Float(), server_default="0", nullable=False),
    )
    op.add_column("orders", sa.Column("prepare_from", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "prepare_from")
    op.drop_column("store_fleet_load", "hold_minutes")
    op.drop_index("ix_orders_delivery_released_at", table_name="orders")
