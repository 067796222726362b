"""A prescription as the caller may see it."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.users.models import Role, User
from prescriptions import review, safety, signing, trail, workflow
from prescriptions.models import Prescription, PrescriptionAttachment
from prescriptions.workflow import PrescriptionStatus

S = PrescriptionStatus


def to_view(session: Session, user: User, p: Prescription) -> dict:
    """The prescription as the caller may see it (warnings for pharmacists and admins)."""
    att = session.execute(
        select(PrescriptionAttachment.content_type, PrescriptionAttachment.size_bytes).where(
            PrescriptionAttachment.prescription_id == p.id
        )
    ).first()
    doctor = session.get(User, p.doctor_id) if p.doctor_id else None
    settings = get_settings()
    now = clock.now()
    review_overdue = p.status is S.ISSUED and (
        p.review_flagged_at is not None
        or workflow.is_overdue(trail.review_since(p), now, settings.prescription_review_minutes)
    )
    staff = user.role in (Role.PHARMACIST, Role.ADMIN)
    warnings = review.repeat_dispense_warnings(session, p) if staff else []
    return {
        "id": p.id,
        "order_id": p.order_id,
        "status": p.status,
        "patient": {
            "id": p.patient_id,
            "legal_name": p.legal_name,
            "id_number_masked": p.id_number_masked,
        },
        "symptoms": p.symptoms,
        "allergies": p.allergies,
        "current_medication": p.current_medication,
        "attachment": (
            {
                "content_type": att[0],
                "size_bytes": att[1],
                "url": f"/api/v1/prescriptions/{p.id}/attachment",
            }
            if att
            else None
        ),
        "requested_at": p.requested_at,
        "escalated": p.escalated_at is not None,
        "doctor": {"id": doctor.id, "name": doctor.name} if doctor else None,
        "claimed_at": p.claimed_at,
        "items": p.items,
        "refills": p.refills,
        "issued_at": p.issued_at,
        "expires_at": p.expires_at,
        "doctor_key_id": p.doctor_key_id,
        "signature": signing.b64encode(p.signature) if p.signature else None,
        "decline_reason": p.decline_reason,
        "review_overdue": review_overdue,
        "reviewed_at": p.reviewed_at,
        "review_reason": p.review_reason,
        # Counted on the first prescription, across its refills.
        "fills_used": (
            session.get(Prescription, p.refill_of).fills_used if p.refill_of else p.fills_used
        ),
        "refill_of": p.refill_of,
        "dispensed_at": p.dispensed_at,
        "warnings": warnings,
        # The coded allergies and the allergy and interaction warnings, for the reviewer.
        "safety": safety.order_warnings(session, p.order_id, p.patient_id) if staff else None,
    }
