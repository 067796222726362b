"""pharmacy safety: patients' coded allergies, the interaction table, a dispense recorded once

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_allergies",
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("substance_code", sa.String(length=100), nullable=False),
        sa.Column("display", sa.String(length=200), nullable=False),
        sa.Column("reaction", sa.String(length=500), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["users.id"],
            name=op.f("fk_patient_allergies_patient_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("patient_id", "substance_code", name=op.f("pk_patient_allergies")),
    )
    op.create_table(
        "drug_interactions",
        sa.Column("substance_a", sa.String(length=100), nullable=False),
        sa.Column("substance_b", sa.String(length=100), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("advice", sa.Text(), nullable=False),
        sa.Column(
            "imported_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            'substance_a COLLATE "C" < substance_b COLLATE "C"',
            name=op.f("ck_drug_interactions_pair_ordered"),
        ),
        sa.CheckConstraint(
            "severity IN ('contraindicated', 'major', 'moderate', 'minor')",
            name=op.f("ck_drug_interactions_severity_known"),
        ),
        sa.PrimaryKeyConstraint("substance_a", "substance_b", name=op.f("pk_drug_interactions")),
    )
    op.create_index(
        "ix_drug_interactions_substance_b", "drug_interactions", ["substance_b"], unique=False
    )
    # The runtime role may insert and read the audit trail only; the index is the owner's.
    op.create_index(
        "uq_prescription_audit_dispensed_once",
        "prescription_audit",
        ["prescription_id"],
        unique=True,
        postgresql_where=sa.text("action = 'dispensed'"),
    )


def downgrade() -> None:
    op.drop_index("uq_prescription_audit_dispensed_once", table_name="prescription_audit")
    op.drop_index("ix_drug_interactions_substance_b", table_name="drug_interactions")
    op.drop_table("drug_interactions")
    op.drop_table("patient_allergies")
