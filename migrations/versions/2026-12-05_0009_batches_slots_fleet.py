"""dispatch batches, delivery slots, and the fleet load around each store

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("couriers", sa.Column("shift_ends_at", sa.DateTime(timezone=True)))
    op.add_column("dispatch_jobs", sa.Column("batch_id", postgresql.UUID(as_uuid=True)))
    op.add_column("dispatch_jobs", sa.Column("drop_seq", sa.SmallInteger()))
    op.add_column("dispatch_jobs", sa.Column("drop_eta", sa.DateTime(timezone=True)))
    op.create_index(op.f("ix_dispatch_jobs_batch_id"), "dispatch_jobs", ["batch_id"])
    op.add_column(
        "stores",
        sa.Column("slot_capacity", sa.Integer(), server_default=sa.text("12"), nullable=False),
    )
    op.add_column("orders", sa.Column("delivery_slot_start", sa.DateTime(timezone=True)))
    op.add_column("orders", sa.Column("delivery_slot_end", sa.DateTime(timezone=True)))
    op.create_table(
        "delivery_slots",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("booked", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "booked >= 0 AND booked <= capacity",
            name=op.f("ck_delivery_slots_booked_within_capacity"),
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_delivery_slots_slot_span")),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_delivery_slots_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store_id", "starts_at", name=op.f("pk_delivery_slots")),
    )
    op.create_table(
        "store_fleet_load",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("courier_wait_minutes", sa.Float(), nullable=False),
        sa.Column("open_jobs", sa.Integer(), nullable=False),
        sa.Column("couriers", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_store_fleet_load_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_store_fleet_load")),
    )


def downgrade() -> None:
    op.drop_table("store_fleet_load")
    op.drop_table("delivery_slots")
    op.drop_column("orders", "delivery_slot_end")
    op.drop_column("orders", "delivery_slot_start")
    op.drop_column("stores", "slot_capacity")
    op.drop_index(op.f("ix_dispatch_jobs_batch_id"), table_name="dispatch_jobs")
    op.drop_column("dispatch_jobs", "drop_eta")
    op.drop_column("dispatch_jobs", "drop_seq")
    op.drop_column("dispatch_jobs", "batch_id")
    op.drop_column("couriers", "shift_ends_at")
