"""doctor_keys: a server challenge the doctor signs to prove holding the private key

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("doctor_keys", sa.Column("proof_challenge", sa.LargeBinary(), nullable=True))
    op.add_column(
        "doctor_keys",
        sa.Column("proof_challenge_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("doctor_keys", sa.Column("proved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("doctor_keys", "proved_at")
    op.drop_column("doctor_keys", "proof_challenge_expires_at")
    op.drop_column("doctor_keys", "proof_challenge")
