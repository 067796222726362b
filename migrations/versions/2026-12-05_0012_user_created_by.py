"""users: who created the account, so a doctor's key is approved by another admin (four eyes)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 02:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("created_by", sa.Integer(), nullable=True))
    op.create_foreign_key(
        op.f("fk_users_created_by_users"),
        "users",
        "users",
        ["created_by"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_users_created_by_users"), "users", type_="foreignkey")
    op.drop_column("users", "created_by")
