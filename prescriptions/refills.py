"""Refills: a later order of the patient filled from a prescription already filled once, one
course at a time, and a fill given back when its order is cancelled before the hand-over.

Fills are counted on the first prescription, across its refills.
"""

import uuid
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.users.models import User
from prescriptions import requests, trail
from prescriptions.models import Prescription
from prescriptions.workflow import PrescriptionStatus

S = PrescriptionStatus


def check_last_fill_handed_over(session: Session, first: Prescription) -> None:
    """Refuse a refill while an earlier fill of the prescription is approved but not yet handed
    over: one course at a time (the caller holds the first prescription's lock)."""
    pending = session.scalar(
        select(Prescription.order_id)
        .where(
            or_(Prescription.id == first.id, Prescription.refill_of == first.id),
            Prescription.status == S.APPROVED,
        )
        .limit(1)
    )
    if pending is not None:
        raise Conflict(
            _("The last fill of this prescription has not been handed over yet."),
            code="refill_too_early",
            details={"order_id": str(pending)},
        )


def request_refill(
    session: Session, patient: User, prescription_id: uuid.UUID, order_id: uuid.UUID
) -> Prescription:
    """Fill a later order of the patient from a prescription already filled once, when the doctor
    allowed refills and it is still valid.

    The refill carries the doctor's signed payload and signature unchanged, so it goes straight to
    the store's pharmacist, who checks it as any prescription (signature now, validity, items
    within it) and counts the fill on the first prescription when approving.
    """
    first = session.get(Prescription, prescription_id)
    if first is None or first.patient_id != patient.id:
        raise trail.not_found()
    if first.refill_of is not None:
        first = session.get(Prescription, first.refill_of)
    order = requests.lock_order_awaiting_prescription(session, patient, order_id)
    first = trail.lock(session, first.id)
    if first.status not in (S.APPROVED, S.DISPENSED):
        raise Conflict(
            _("Only a prescription that was filled once can be refilled."),
            code="prescription_not_filled",
            details={"status": first.status.value},
        )
    check_last_fill_handed_over(session, first)
    at = clock.now()
    if at >= first.expires_at:
        raise Conflict(
            _("This prescription has expired."),
            code="prescription_expired",
            details={"expired_at": first.expires_at.isoformat()},
        )
    if first.fills_used > first.refills:
        raise Conflict(
            _("This prescription has no refills left."),
            code="no_refills_left",
            details={"refills": first.refills, "fills_used": first.fills_used},
        )
    p = Prescription(
        id=uuid.uuid4(),
        order_id=order.id,
        patient_id=patient.id,
        status=S.ISSUED,
        legal_name=first.legal_name,
        id_number_hmac=first.id_number_hmac,
        id_number_pepper_version=first.id_number_pepper_version,
        id_number_masked=first.id_number_masked,
        symptoms=first.symptoms,
        allergies=first.allergies,
        current_medication=first.current_medication,
        requested_at=at,
        doctor_id=first.doctor_id,
        claimed_at=first.claimed_at,
        items=first.items,
        refills=first.refills,
        issued_at=first.issued_at,
        expires_at=first.expires_at,
        signed_payload=first.signed_payload,
        signature=first.signature,
        doctor_key_id=first.doctor_key_id,
        refill_of=first.id,
        fills_used=0,
    )
    requests.add_open_request(session, p)
    trail.audit(
        session,
        p,
        "refill_requested",
        actor=patient,
        from_status=None,
        to_status=S.ISSUED,
        at=at,
        details={"refill_of": str(first.id), "fills_used": first.fills_used},
    )
    trail.emit(
        session,
        "prescription.issued",
        p,
        order.store_id,
        refill_of=str(first.id),
        expires_at=p.expires_at.isoformat(),
    )
    session.flush()
    return p


def give_back_fill(session: Session, p: Prescription, at: datetime) -> None:
    """Count an approved fill that was not handed over as unused again (the caller holds the
    order and the prescription locks)."""
    if p.refill_of is None:
        p.fills_used -= 1
        return
    first = trail.lock(session, p.refill_of)  # after the order and the refill, as review locks
    first.fills_used -= 1
    trail.audit(
        session,
        first,
        "refill_returned",
        actor=None,
        from_status=first.status,
        to_status=first.status,
        at=at,
        reason=f"Refill {p.id}: its order was cancelled before the hand-over; the fill is "
        "given back.",
        details={"refill": str(p.id), "order_id": str(p.order_id), "fills_used": first.fills_used},
    )
