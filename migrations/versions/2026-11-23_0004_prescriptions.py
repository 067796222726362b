"""prescriptions: requests, doctors' keys, attachments, and the append-only audit trail

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 02:30:36.932454
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Created once up front and shared by two tables (create_type=False in the columns).
prescription_status = postgresql.ENUM(
    "requested",
    "claimed",
    "issued",
    "declined",
    "approved",
    "rejected",
    "dispensed",
    "expired",
    "cancelled",
    name="prescription_status",
    create_type=False,
)
doctor_key_status = postgresql.ENUM(
    "pending", "active", "superseded", "revoked", name="doctor_key_status", create_type=False
)

# The audit trail is append-only, whoever connects: UPDATE and DELETE raise, even when they would
# touch no row (statement level). TRUNCATE is left to privileges: the application role must not
# hold it in production, and test clean-up relies on it.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION prescription_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'prescription_audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER prescription_audit_append_only
BEFORE UPDATE OR DELETE ON prescription_audit
FOR EACH STATEMENT EXECUTE FUNCTION prescription_audit_append_only()
"""


def upgrade() -> None:
    bind = op.get_bind()
    prescription_status.create(bind)
    doctor_key_status.create(bind)
    op.create_table(
        "doctor_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("doctor_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("status", doctor_key_status, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_by", sa.Integer(), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "octet_length(public_key) = 32", name=op.f("ck_doctor_keys_public_key_length")
        ),
        sa.ForeignKeyConstraint(
            ["approved_by"],
            ["users.id"],
            name=op.f("fk_doctor_keys_approved_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"],
            ["users.id"],
            name=op.f("fk_doctor_keys_doctor_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["revoked_by"],
            ["users.id"],
            name=op.f("fk_doctor_keys_revoked_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_doctor_keys")),
        sa.UniqueConstraint("public_key", name=op.f("uq_doctor_keys_public_key")),
    )
    op.create_index(op.f("ix_doctor_keys_doctor_id"), "doctor_keys", ["doctor_id"], unique=False)
    op.create_index(
        "uq_doctor_keys_one_active",
        "doctor_keys",
        ["doctor_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "prescriptions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("status", prescription_status, nullable=False),
        sa.Column("legal_name", sa.String(length=200), nullable=False),
        sa.Column("id_number_hmac", sa.String(length=64), nullable=False),
        sa.Column("id_number_masked", sa.String(length=64), nullable=False),
        sa.Column("symptoms", sa.Text(), nullable=False),
        sa.Column("allergies", sa.Text(), nullable=False),
        sa.Column("current_medication", sa.Text(), nullable=False),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("doctor_id", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_payload", sa.LargeBinary(), nullable=True),
        sa.Column("pending_payload_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_key_id", sa.Integer(), nullable=True),
        sa.Column("items", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("refills", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signed_payload", sa.LargeBinary(), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("doctor_key_id", sa.Integer(), nullable=True),
        sa.Column("decline_reason", sa.Text(), nullable=True),
        sa.Column("review_flagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column("fills_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("dispensed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('requested', 'cancelled') OR doctor_id IS NOT NULL",
            name=op.f("ck_prescriptions_claimed_has_doctor"),
        ),
        sa.CheckConstraint(
            "status NOT IN ('issued', 'approved', 'rejected', 'dispensed', 'expired') OR (signature IS NOT NULL AND signed_payload IS NOT NULL AND expires_at IS NOT NULL)",
            name=op.f("ck_prescriptions_issued_is_signed"),
        ),
        sa.CheckConstraint("fills_used >= 0", name=op.f("ck_prescriptions_fills_used_nonnegative")),
        sa.CheckConstraint(
            "refills >= 0 AND refills <= 12", name=op.f("ck_prescriptions_refills_range")
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"],
            ["users.id"],
            name=op.f("fk_prescriptions_doctor_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["doctor_key_id"],
            ["doctor_keys.id"],
            name=op.f("fk_prescriptions_doctor_key_id_doctor_keys"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_prescriptions_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["users.id"],
            name=op.f("fk_prescriptions_patient_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["pending_key_id"],
            ["doctor_keys.id"],
            name=op.f("fk_prescriptions_pending_key_id_doctor_keys"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"],
            ["users.id"],
            name=op.f("fk_prescriptions_reviewed_by_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescriptions")),
    )
    op.create_index(
        op.f("ix_prescriptions_doctor_id"), "prescriptions", ["doctor_id"], unique=False
    )
    op.create_index(op.f("ix_prescriptions_order_id"), "prescriptions", ["order_id"], unique=False)
    op.create_index(
        op.f("ix_prescriptions_patient_id"), "prescriptions", ["patient_id"], unique=False
    )
    op.create_index(
        "ix_prescriptions_status_requested_at",
        "prescriptions",
        ["status", "requested_at"],
        unique=False,
    )
    op.create_index(
        "uq_prescriptions_open_order",
        "prescriptions",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('requested', 'claimed', 'issued')"),
    )
    op.create_table(
        "prescription_attachments",
        sa.Column("prescription_id", sa.UUID(), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "content_type IN ('image/jpeg', 'image/png', 'application/pdf')",
            name=op.f("ck_prescription_attachments_content_type_allowed"),
        ),
        sa.CheckConstraint(
            "size_bytes > 0 AND size_bytes = octet_length(data)",
            name=op.f("ck_prescription_attachments_size_matches"),
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_prescription_attachments_prescription_id_prescriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("prescription_id", name=op.f("pk_prescription_attachments")),
    )
    op.create_table(
        "prescription_audit",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("prescription_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("from_status", prescription_status, nullable=True),
        sa.Column("to_status", prescription_status, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_prescription_audit_actor_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_prescription_audit_prescription_id_prescriptions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescription_audit")),
    )
    op.create_index(
        op.f("ix_prescription_audit_prescription_id"),
        "prescription_audit",
        ["prescription_id"],
        unique=False,
    )
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS prescription_audit_append_only ON prescription_audit")
    op.execute("DROP FUNCTION IF EXISTS prescription_audit_append_only()")
    op.drop_index(op.f("ix_prescription_audit_prescription_id"), table_name="prescription_audit")
    op.drop_table("prescription_audit")
    op.drop_table("prescription_attachments")
    op.drop_index(
        "uq_prescriptions_open_order",
        table_name="prescriptions",
        postgresql_where=sa.text("status IN ('requested', 'claimed', 'issued')"),
    )
    op.drop_index("ix_prescriptions_status_requested_at", table_name="prescriptions")
    op.drop_index(op.f("ix_prescriptions_patient_id"), table_name="prescriptions")
    op.drop_index(op.f("ix_prescriptions_order_id"), table_name="prescriptions")
    op.drop_index(op.f("ix_prescriptions_doctor_id"), table_name="prescriptions")
    op.drop_table("prescriptions")
    op.drop_index(
        "uq_doctor_keys_one_active",
        table_name="doctor_keys",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(op.f("ix_doctor_keys_doctor_id"), table_name="doctor_keys")
    op.drop_table("doctor_keys")
    op.execute("DROP TYPE IF EXISTS prescription_status")
    op.execute("DROP TYPE IF EXISTS doctor_key_status")
