"""Prescription requests and the prescriptions doctors sign, their attachments, doctors' public
keys, the append-only audit trail, and what the pharmacist's safety checks read: the patients'
coded allergies and the interaction table the chain loads."""

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from o2o.db import Base
from prescriptions.workflow import PrescriptionStatus


class DoctorKeyStatus(enum.StrEnum):
    PENDING = "pending"  # registered by the doctor, not yet approved by an admin
    ACTIVE = "active"  # the doctor's one key that new signatures are checked against
    SUPERSEDED = "superseded"  # replaced by a newer approved key; its old signatures stand
    REVOKED = "revoked"  # compromised or withdrawn: nothing it signed is accepted any more


def _values(e: type[enum.Enum]) -> list[str]:
    return [m.value for m in e]


prescription_status_enum = ENUM(
    PrescriptionStatus, name="prescription_status", values_callable=_values
)
doctor_key_status_enum = ENUM(DoctorKeyStatus, name="doctor_key_status", values_callable=_values)


class DoctorKey(Base):
    __tablename__ = "doctor_keys"
    __table_args__ = (
        # One active key per doctor, enforced by the database as well as by the approval code.
        Index(
            "uq_doctor_keys_one_active",
            "doctor_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        CheckConstraint("octet_length(public_key) = 32", name="public_key_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    status: Mapped[DoctorKeyStatus] = mapped_column(doctor_key_status_enum)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    approved_at: Mapped[datetime | None]
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    superseded_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Proof of possession: the server's challenge (the exact bytes the doctor signs, bound to this
    # key and doctor) until it is answered, and when the doctor proved holding the private key.
    # Keys approved before proofs existed keep proved_at empty.
    proof_challenge: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    proof_challenge_expires_at: Mapped[datetime | None]
    proved_at: Mapped[datetime | None]


class Prescription(Base):
    """A patient's request for one order and, once a doctor signs it, the prescription itself."""

    __tablename__ = "prescriptions"
    __table_args__ = (
        # One open request per order; closed ones (declined, expired, ...) stay as history.
        Index(
            "uq_prescriptions_open_order",
            "order_id",
            unique=True,
            postgresql_where=text("status IN ('requested', 'claimed', 'issued')"),
        ),
        # The doctors' queue and the escalation sweep read requests oldest first by status.
        Index("ix_prescriptions_status_requested_at", "status", "requested_at"),
        # Identity lookups (and the upgrade of old hashes) find rows by hash.
        Index("ix_prescriptions_id_number_hmac", "id_number_hmac"),
        CheckConstraint("refills >= 0 AND refills <= 12", name="refills_range"),
        CheckConstraint("fills_used >= 0", name="fills_used_nonnegative"),
        CheckConstraint("refill_of IS NULL OR refill_of <> id", name="refill_not_self"),
        CheckConstraint(
            "status IN ('requested', 'cancelled') OR doctor_id IS NOT NULL",
            name="claimed_has_doctor",
        ),
        CheckConstraint(
            "status NOT IN ('issued', 'approved', 'rejected', 'dispensed', 'expired') "
            "OR (signature IS NOT NULL AND signed_payload IS NOT NULL AND expires_at IS NOT NULL)",
            name="issued_is_signed",
        ),
    )

    # Not guessable: ids appear in URLs the apps share.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="RESTRICT"), index=True
    )
    patient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    status: Mapped[PrescriptionStatus] = mapped_column(prescription_status_enum)

    # Real-name sale: the legal name in clear; the identity number only as a keyed hash
    # (HMAC-SHA256 with the secret key, so a leaked table cannot be reversed by enumerating the
    # small space of identity numbers) and a masked form for display.
    legal_name: Mapped[str] = mapped_column(String(200))
    id_number_hmac: Mapped[str] = mapped_column(String(64))
    # The version of the identity pepper the hash was made with (O2O_IDENTITY_PEPPER_VERSION).
    id_number_pepper_version: Mapped[int] = mapped_column(SmallInteger)
    id_number_masked: Mapped[str] = mapped_column(String(64))

    symptoms: Mapped[str] = mapped_column(Text)
    allergies: Mapped[str] = mapped_column(Text)
    current_medication: Mapped[str] = mapped_column(Text)

    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set once by the sweep when no doctor took the request in time.
    escalated_at: Mapped[datetime | None]

    doctor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    claimed_at: Mapped[datetime | None]

    # The payload the server prepared for the doctor to sign, kept until it is signed.
    pending_payload: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    pending_payload_at: Mapped[datetime | None]
    pending_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor_keys.id", ondelete="RESTRICT")
    )

    # The doctor's decision, as signed: items [{product_id, product_name, quantity, dose,
    # frequency, duration_days}], refills and validity. `signed_payload` is the exact bytes.
    items: Mapped[list | None] = mapped_column(JSONB)
    refills: Mapped[int] = mapped_column(server_default=text("0"))
    issued_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    signed_payload: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    doctor_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor_keys.id", ondelete="RESTRICT")
    )
    decline_reason: Mapped[str | None] = mapped_column(Text)

    # Set once by the sweep when no pharmacist reviewed the issued prescription in time.
    review_flagged_at: Mapped[datetime | None]
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    reviewed_at: Mapped[datetime | None]
    review_reason: Mapped[str | None] = mapped_column(Text)

    # A refill: a later order of the patient filled from this earlier prescription, carrying its
    # signed payload and signature unchanged. Fills are counted on that first row.
    refill_of: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("prescriptions.id", ondelete="RESTRICT"), index=True
    )
    # On the first row: how many times the prescription was approved for dispensing, across its
    # refills (at most 1 + refills). On a refill row it stays 0: the count lives on the first
    # prescription.
    fills_used: Mapped[int] = mapped_column(server_default=text("0"))
    dispensed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(Text)


class PrescriptionAttachment(Base):
    """A photo or PDF of an existing paper prescription.

    Kept in the database (bytea) rather than on disk: it commits or rolls back with the request,
    is backed up and replicated with everything else, and is never reachable through a path or a
    web root: the only way out is the access-checked attachment endpoint.
    """

    __tablename__ = "prescription_attachments"
    __table_args__ = (
        CheckConstraint("size_bytes > 0 AND size_bytes = octet_length(data)", name="size_matches"),
        CheckConstraint(
            "content_type IN ('image/jpeg', 'image/png', 'application/pdf')",
            name="content_type_allowed",
        ),
    )

    prescription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("prescriptions.id", ondelete="CASCADE"), primary_key=True
    )
    # Detected from the bytes, never taken from the client.
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PrescriptionAudit(Base):
    """One step in a prescription's life. Rows are only ever inserted: a trigger created by the
    migration refuses UPDATE and DELETE."""

    __tablename__ = "prescription_audit"
    __table_args__ = (
        # A prescription is dispensed once: a completion handled twice cannot record it twice.
        Index(
            "uq_prescription_audit_dispensed_once",
            "prescription_id",
            unique=True,
            postgresql_where=text("action = 'dispensed'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    prescription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("prescriptions.id", ondelete="RESTRICT"), index=True
    )
    # requested, claimed, payload_prepared, issued, declined, approved, rejected, dispensed,
    # expired, escalated, review_overdue, cancelled
    action: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    # The actor's role at the time ("system" for sweeps).
    actor_role: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    from_status: Mapped[PrescriptionStatus | None] = mapped_column(prescription_status_enum)
    to_status: Mapped[PrescriptionStatus] = mapped_column(prescription_status_enum)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSONB)


class PatientAllergy(Base):
    """A substance the patient is allergic to, coded (see `prescriptions.substances`), with the
    name the patient knows it by and the reaction they had."""

    __tablename__ = "patient_allergies"

    patient_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    substance_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    display: Mapped[str] = mapped_column(String(200))
    reaction: Mapped[str | None] = mapped_column(String(500))
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DrugInteraction(Base):
    """Two substances that interact, as the chain's interaction source says: how badly, and what
    to do. Replaced as a whole by each import (`prescriptions.interaction_import`)."""

    __tablename__ = "drug_interactions"
    __table_args__ = (
        # One row per pair, stored in code-point order so (a, b) and (b, a) are the same key.
        CheckConstraint('substance_a COLLATE "C" < substance_b COLLATE "C"', name="pair_ordered"),
        CheckConstraint(
            "severity IN ('contraindicated', 'major', 'moderate', 'minor')", name="severity_known"
        ),
        Index("ix_drug_interactions_substance_b", "substance_b"),
    )

    substance_a: Mapped[str] = mapped_column(String(100), primary_key=True)
    substance_b: Mapped[str] = mapped_column(String(100), primary_key=True)
    severity: Mapped[str] = mapped_column(String(16))
    advice: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(server_default=func.now())
