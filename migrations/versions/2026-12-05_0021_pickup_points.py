"""community pickup points: points, the store's runs to them, parcels, leaders' commissions

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 07:10:00.000000
"""

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geography
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_JOB = "status IN ('open', 'claimed', 'picked_up', 'locked')"


def _runtime_role() -> str:
    role = os.environ.get("O2O_DB_RUNTIME_ROLE", "o2o_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"O2O_DB_RUNTIME_ROLE is not a plain role name: {role!r}")
    return role


def upgrade() -> None:
    # New enum values are usable once committed; nothing below writes them.
    op.execute("ALTER TYPE user_role ADD VALUE IF NOT EXISTS 'leader'")
    op.execute("ALTER TYPE fulfillment ADD VALUE IF NOT EXISTS 'pickup_point'")

    op.create_table(
        "pickup_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column(
            "location",
            Geography(geometry_type="POINT", srid=4326, spatial_index=False),
            nullable=False,
        ),
        sa.Column("opening_hours", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("leader_user_id", sa.Integer(), nullable=True),
        sa.Column("commission_rate_bp", sa.Integer(), nullable=False),
        sa.Column("run_times", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("run_travel_minutes", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "commission_rate_bp BETWEEN 0 AND 10000",
            name=op.f("ck_pickup_points_commission_rate_bp_range"),
        ),
        sa.CheckConstraint(
            "run_travel_minutes BETWEEN 0 AND 600",
            name=op.f("ck_pickup_points_run_travel_minutes_range"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_pickup_points_store_id_stores"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["leader_user_id"],
            ["users.id"],
            name=op.f("fk_pickup_points_leader_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pickup_points")),
    )
    op.create_geospatial_index(
        "idx_pickup_points_location",
        "pickup_points",
        ["location"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(op.f("ix_pickup_points_store_id"), "pickup_points", ["store_id"])
    op.create_index(op.f("ix_pickup_points_leader_user_id"), "pickup_points", ["leader_user_id"])

    op.add_column("orders", sa.Column("pickup_point_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        op.f("fk_orders_pickup_point_id_pickup_points"),
        "orders",
        "pickup_points",
        ["pickup_point_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_index(op.f("ix_orders_pickup_point_id"), "orders", ["pickup_point_id"])

    run_status = postgresql.ENUM("scheduled", "en_route", "arrived", name="pickup_run_status")
    parcel_status = postgresql.ENUM(
        "booked",
        "in_run",
        "at_point",
        "collected",
        "returned",
        "cancelled",
        name="pickup_parcel_status",
    )
    op.create_table(
        "pickup_runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("departs_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arrives_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", run_status, server_default=sa.text("'scheduled'"), nullable=False),
        sa.Column("handoff_code", sa.String(length=12), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["point_id"],
            ["pickup_points.id"],
            name=op.f("fk_pickup_runs_point_id_pickup_points"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_pickup_runs_store_id_stores"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pickup_runs")),
        sa.UniqueConstraint("point_id", "departs_at", name="uq_pickup_runs_point_departs_at"),
    )
    op.create_table(
        "pickup_parcels",
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("status", parcel_status, nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_pickup_parcels_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["point_id"],
            ["pickup_points.id"],
            name=op.f("fk_pickup_parcels_point_id_pickup_points"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pickup_runs.id"],
            name=op.f("fk_pickup_parcels_run_id_pickup_runs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_pickup_parcels")),
    )
    op.create_index("ix_pickup_parcels_run_status", "pickup_parcels", ["run_id", "status"])
    op.create_index("ix_pickup_parcels_point_status", "pickup_parcels", ["point_id", "status"])
    op.create_index(
        "ix_pickup_parcels_hold_expires_at",
        "pickup_parcels",
        ["hold_expires_at"],
        postgresql_where=sa.text("status = 'at_point'"),
    )

    op.alter_column("dispatch_jobs", "order_id", existing_type=sa.UUID(), nullable=True)
    op.add_column("dispatch_jobs", sa.Column("run_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_dispatch_jobs_run_id_pickup_runs"),
        "dispatch_jobs",
        "pickup_runs",
        ["run_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_check_constraint(
        op.f("ck_dispatch_jobs_order_or_run"),
        "dispatch_jobs",
        "(order_id IS NULL) <> (run_id IS NULL)",
    )
    op.create_index(
        "uq_dispatch_jobs_live_run",
        "dispatch_jobs",
        ["run_id"],
        unique=True,
        postgresql_where=sa.text(LIVE_JOB),
    )

    op.create_table(
        "leader_commissions",
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("leader_user_id", sa.Integer(), nullable=True),
        sa.Column("goods_minor", sa.BigInteger(), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("commission_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("accrued_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "commission_minor >= 0", name=op.f("ck_leader_commissions_commission_nonnegative")
        ),
        sa.CheckConstraint(
            "goods_minor >= 0", name=op.f("ck_leader_commissions_goods_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_leader_commissions_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["point_id"],
            ["pickup_points.id"],
            name=op.f("fk_leader_commissions_point_id_pickup_points"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["leader_user_id"],
            ["users.id"],
            name=op.f("fk_leader_commissions_leader_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_leader_commissions")),
    )
    op.create_index(
        "ix_leader_commissions_point_accrued", "leader_commissions", ["point_id", "accrued_at"]
    )
    op.create_index(
        op.f("ix_leader_commissions_leader_user_id"), "leader_commissions", ["leader_user_id"]
    )
    # A commission is written once and never changed or removed by the application.
    role = _runtime_role()
    op.execute(
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"REVOKE UPDATE, DELETE, TRUNCATE ON leader_commissions FROM {role}; END IF; END $$"
    )


def downgrade() -> None:
    op.drop_table("leader_commissions")
    op.drop_index("uq_dispatch_jobs_live_run", table_name="dispatch_jobs")
    op.drop_constraint(op.f("ck_dispatch_jobs_order_or_run"), "dispatch_jobs", type_="check")
    op.drop_constraint(
        op.f("fk_dispatch_jobs_run_id_pickup_runs"), "dispatch_jobs", type_="foreignkey"
    )
    op.execute("DELETE FROM dispatch_jobs WHERE order_id IS NULL")
    op.drop_column("dispatch_jobs", "run_id")
    op.alter_column("dispatch_jobs", "order_id", existing_type=sa.UUID(), nullable=False)
    op.drop_table("pickup_parcels")
    op.drop_table("pickup_runs")
    op.execute("DROP TYPE pickup_parcel_status")
    op.execute("DROP TYPE pickup_run_status")
    op.drop_index(op.f("ix_orders_pickup_point_id"), table_name="orders")
    op.drop_constraint(
        op.f("fk_orders_pickup_point_id_pickup_points"), "orders", type_="foreignkey"
    )
    op.drop_column("orders", "pickup_point_id")
    op.drop_index("idx_pickup_points_location", table_name="pickup_points")
    op.drop_table("pickup_points")
    # PostgreSQL cannot drop an enum value: 'leader' and 'pickup_point' stay in their types,
    # unused (no row holds them once the tables above are gone and the orders are pickup or
    # delivery again).
