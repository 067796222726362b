"""store_fleet_load: the queue model's wait alone, beside the promised wait (which also counts
how long the store's jobs are waiting now)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("store_fleet_load", sa.Column("queue_wait_minutes", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("store_fleet_load", "queue_wait_minutes")
