"""prescriptions: refills, a later order filled from an earlier prescription

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "prescriptions",
        sa.Column("refill_of", postgresql.UUID(as_uuid=True), nullable=True),
    )
    op.create_foreign_key(
        op.f("fk_prescriptions_refill_of_prescriptions"),
        "prescriptions",
        "prescriptions",
        ["refill_of"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_index(
        op.f("ix_prescriptions_refill_of"), "prescriptions", ["refill_of"], unique=False
    )
    op.create_check_constraint(
        op.f("ck_prescriptions_refill_not_self"),
        "prescriptions",
        "refill_of IS NULL OR refill_of <> id",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_prescriptions_refill_not_self"), "prescriptions", type_="check")
    op.drop_index(op.f("ix_prescriptions_refill_of"), table_name="prescriptions")
    op.drop_constraint(
        op.f("fk_prescriptions_refill_of_prescriptions"), "prescriptions", type_="foreignkey"
    )
    op.drop_column("prescriptions", "refill_of")
