"""payments: payment apps, an order's payment and refunds, events from the apps; orders start
awaiting payment; paid orders flagged when a point-of-sale count takes their stock

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ORDER_STATUSES = (
    "awaiting_prescription",
    "released",
    "preparing",
    "ready",
    "out_for_delivery",
    "completed",
    "cancelled",
)

payment_status = postgresql.ENUM(
    "pending", "captured", "failed", "cancelled", name="payment_status", create_type=False
)
payment_method = postgresql.ENUM("online", "at_store", name="payment_method", create_type=False)
refund_status = postgresql.ENUM(
    "requested", "succeeded", "failed", name="refund_status", create_type=False
)


def upgrade() -> None:
    # Unused in this transaction, so adding the value inside it is allowed (PostgreSQL 12+).
    op.execute(
        "ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'awaiting_payment' "
        "BEFORE 'awaiting_prescription'"
    )
    op.add_column("orders", sa.Column("stock_short_at", sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    payment_status.create(bind, checkfirst=True)
    payment_method.create(bind, checkfirst=True)
    refund_status.create(bind, checkfirst=True)

    op.create_table(
        "payment_apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("webhook_endpoint_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("previous_secret", sa.String(length=128), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["webhook_endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_payment_apps_webhook_endpoint_id_webhook_endpoints"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_apps")),
        sa.UniqueConstraint("name", name=op.f("uq_payment_apps_name")),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=True),
        sa.Column("method", payment_method, nullable=False),
        sa.Column("status", payment_status, nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("captured_minor", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("psp_reference", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("collected_by", sa.Integer(), nullable=True),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_payments_amount_nonnegative")),
        sa.CheckConstraint(
            "captured_minor >= 0 AND captured_minor <= amount_minor",
            name=op.f("ck_payments_captured_range"),
        ),
        sa.CheckConstraint(
            "method = 'at_store' OR app_id IS NOT NULL", name=op.f("ck_payments_online_has_app")
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["payment_apps.id"],
            name=op.f("fk_payments_app_id_payment_apps"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["collected_by"],
            ["users.id"],
            name=op.f("fk_payments_collected_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_payments_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("order_id", name=op.f("uq_payments_order_id")),
    )
    op.create_index(op.f("ix_payments_app_id"), "payments", ["app_id"], unique=False)
    op.create_index("ix_payments_captured_at", "payments", ["captured_at"], unique=False)
    op.create_table(
        "refunds",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("payment_id", sa.UUID(), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("status", refund_status, nullable=False),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("psp_reference", sa.String(length=200), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_refunds_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"], unique=False)
    op.create_table(
        "payment_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.UUID(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["payment_apps.id"],
            name=op.f("fk_payment_events_app_id_payment_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_payment_events_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sa.UniqueConstraint("app_id", "event_id", name="uq_payment_events_app_event"),
    )
    op.create_index(
        op.f("ix_payment_events_payment_id"), "payment_events", ["payment_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("payment_events")
    op.drop_table("refunds")
    op.drop_table("payments")
    op.drop_table("payment_apps")
    op.drop_column("orders", "stock_short_at")
    bind = op.get_bind()
    refund_status.drop(bind, checkfirst=True)
    payment_method.drop(bind, checkfirst=True)
    payment_status.drop(bind, checkfirst=True)
    # PostgreSQL cannot drop an enum value: unpaid orders are closed, then the type is rebuilt.
    op.execute(
        "UPDATE orders SET status = 'cancelled', cancel_reason = 'Payments removed.' "
        "WHERE status = 'awaiting_payment'"
    )
    op.execute(
        "DELETE FROM order_events WHERE from_status IS NULL AND to_status = 'awaiting_payment'"
    )
    op.execute("UPDATE order_events SET from_status = NULL WHERE from_status = 'awaiting_payment'")
    op.execute(
        "UPDATE order_events SET to_status = 'cancelled' WHERE to_status = 'awaiting_payment'"
    )
    # The partial index of open deliveries compares with the type: rebuilt with it.
    op.drop_index("ix_orders_open_delivery_deadline", table_name="orders")
    op.execute("ALTER TYPE order_status RENAME TO order_status_old")
    values = ", ".join(f"'{v}'" for v in OLD_ORDER_STATUSES)
    op.execute(f"CREATE TYPE order_status AS ENUM ({values})")
    for table, column in (
        ("orders", "status"),
        ("order_events", "from_status"),
        ("order_events", "to_status"),
    ):
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE order_status "
            f"USING {column}::text::order_status"
        )
    op.execute("DROP TYPE order_status_old")
    op.create_index(
        "ix_orders_open_delivery_deadline",
        "orders",
        ["sla_deadline"],
        unique=False,
        postgresql_where=sa.text(
            "fulfillment = 'delivery' "
            "AND status IN ('released', 'preparing', 'ready', 'out_for_delivery')"
        ),
    )
