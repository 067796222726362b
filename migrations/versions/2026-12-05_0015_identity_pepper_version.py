"""prescriptions: the identity pepper's version stored with each identity-number hash

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every hash stored so far was made with the one pepper there was: version 1. New rows name
    # their version explicitly, so the default goes once the existing rows have it.
    op.add_column(
        "prescriptions",
        sa.Column(
            "id_number_pepper_version", sa.SmallInteger(), nullable=False, server_default="1"
        ),
    )
    op.alter_column("prescriptions", "id_number_pepper_version", server_default=None)
    op.create_index(
        op.f("ix_prescriptions_id_number_hmac"), "prescriptions", ["id_number_hmac"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_prescriptions_id_number_hmac"), table_name="prescriptions")
    op.drop_column("prescriptions", "id_number_pepper_version")
