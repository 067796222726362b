"""dispatch_jobs.pickup_due_at: when a claim goes back to the pool if the parcel is not picked up
(set at the claim from the courier's ride to the store); the stale-claim sweep's index follows it

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dispatch_jobs", sa.Column("pickup_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    # Claims held now keep the rule they were made under: the default 30 minutes from the claim.
    op.execute(
        "UPDATE dispatch_jobs "
        "SET pickup_due_at = coalesce(claimed_at, now()) + interval '30 minutes' "
        "WHERE status = 'claimed'"
    )
    op.create_check_constraint(
        op.f("ck_dispatch_jobs_claimed_has_pickup_due"),
        "dispatch_jobs",
        "status <> 'claimed' OR pickup_due_at IS NOT NULL",
    )
    op.drop_index("ix_dispatch_jobs_claimed_at", table_name="dispatch_jobs")
    op.create_index(
        op.f("ix_dispatch_jobs_pickup_due_at"),
        "dispatch_jobs",
        ["pickup_due_at"],
        postgresql_where=sa.text("status = 'claimed'"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_dispatch_jobs_pickup_due_at"), table_name="dispatch_jobs")
    op.create_index(
        "ix_dispatch_jobs_claimed_at",
        "dispatch_jobs",
        ["claimed_at"],
        postgresql_where=sa.text("status = 'claimed'"),
    )
    op.drop_constraint(
        op.f("ck_dispatch_jobs_claimed_has_pickup_due"), "dispatch_jobs", type_="check"
    )
    op.drop_column("dispatch_jobs", "pickup_due_at")
