"""dispatch: rank-ordered index on open jobs per store for claims and listings

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:12:58.554176
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_dispatch_jobs_open_store", table_name="dispatch_jobs")
    op.create_index(
        "ix_dispatch_jobs_open_rank",
        "dispatch_jobs",
        ["store_id", sa.literal_column("priority DESC"), "deadline", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_dispatch_jobs_open_rank", table_name="dispatch_jobs")
    op.create_index(
        "ix_dispatch_jobs_open_store",
        "dispatch_jobs",
        ["store_id", "deadline"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )
