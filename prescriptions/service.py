"""Prescriptions as other floors see them: which prescription an order has, what happens to it
when its order is cancelled or handed over (subscribed to the order events in `o2o.wiring`), the
prescription a dispense record points at, and the pharmacist's safety warnings for an order.

The steps themselves live by job: `requests`, `refills`, `doctor_keys`, `issuing`, `review`, `queue`,
`views`, `sweeps`, `audit`; what they share is in `trail`.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.orders.models import Order
from o2o.users.models import User
from prescriptions import fhir, issuing, refills, safety, trail, workflow
from prescriptions.models import Prescription
from prescriptions.workflow import PrescriptionStatus
from stores.models import Lot

S = PrescriptionStatus


def prescription_id_for_order(session: Session, order_id: uuid.UUID) -> uuid.UUID | None:
    """The order's latest prescription request, if any (for the order response)."""
    return session.scalar(
        select(Prescription.id)
        .where(Prescription.order_id == order_id)
        .order_by(Prescription.requested_at.desc(), Prescription.id)
        .limit(1)
    )


def prescription_ids_for_orders(
    session: Session, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Each order's latest prescription request (for a page of order responses, in one query)."""
    if not order_ids:
        return {}
    rows = session.execute(
        select(Prescription.order_id, Prescription.id)
        .where(Prescription.order_id.in_(order_ids))
        .distinct(Prescription.order_id)
        .order_by(Prescription.order_id, Prescription.requested_at.desc(), Prescription.id)
    )
    return dict(rows.all())


def on_order_cancelled(session: Session, order) -> None:
    """Close the order's open prescription request, if any; an approved fill that was not handed
    over is given back (counted again as unused on the first prescription)."""
    rows = session.scalars(
        select(Prescription)
        .where(
            Prescription.order_id == order.id,
            Prescription.status.in_(workflow.OPEN_STATES | {S.APPROVED}),
        )
        .order_by(Prescription.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    at = clock.now()
    reason = order.cancel_reason or "The order was cancelled."
    for p in rows:
        if p.status is S.APPROVED:
            refills.give_back_fill(session, p, at)
        trail.move(session, p, S.CANCELLED, "cancelled", actor=None, at=at, reason=reason)
        p.closed_reason = reason
        trail.clear_pending(p)
    session.flush()


def mark_dispensed(session: Session, order, *, actor_id: int | None = None) -> None:
    """Record that the order's prescription was dispensed (used once)."""
    p = session.scalar(
        select(Prescription)
        .where(Prescription.order_id == order.id, Prescription.status == S.APPROVED)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if p is None:
        return  # no prescription, or already dispensed: nothing to record
    actor = session.get(User, actor_id) if actor_id is not None else None
    at = order.completed_at or clock.now()
    # What was handed over, lot by lot: the trail keeps it even if the order record is changed.
    trail.move(
        session,
        p,
        S.DISPENSED,
        "dispensed",
        actor=actor,
        at=at,
        details={"order_id": str(order.id), "handed_over": handed_over(session, order)},
    )
    p.dispensed_at = at
    session.flush()


def handed_over(session: Session, order: Order) -> list[dict]:
    """The prescription items of an order and the lots each took (number, expiry, units)."""
    lines = [line for line in order.lines if line.rx_only]
    lot_ids = [a.lot_id for line in lines for a in line.allocations]
    lots = {lot.id: lot for lot in session.scalars(select(Lot).where(Lot.id.in_(lot_ids)))}
    return [
        {
            "product_id": line.product_id,
            "quantity": line.quantity,
            "lots": [
                {
                    "lot_number": lots[a.lot_id].lot_number,
                    "expiry_date": lots[a.lot_id].expiry_date.isoformat(),
                    "quantity": a.quantity,
                }
                for a in line.allocations
            ],
        }
        for line in lines
    ]


def dispense_authorization(session: Session, order_id: uuid.UUID) -> dict | None:
    """The prescription that authorized the order's prescription items, as a dispense record
    refers to it: {"prescription_id", "signed_prescription_id", "refill", "requests": {product_id:
    {"id", "identifier"}}}, the MedicationRequests of `GET /prescriptions/{id}/fhir`. None when
    no approved prescription covers the order."""
    p = session.scalar(
        select(Prescription)
        .where(
            Prescription.order_id == order_id,
            Prescription.status.in_((S.APPROVED, S.DISPENSED)),
        )
        .order_by(Prescription.requested_at.desc(), Prescription.id)
        .limit(1)
    )
    if p is None:
        return None
    # A refill fills the first prescription again: its MedicationRequests are the first one's.
    signed_id = p.refill_of or p.id
    document = issuing.signed_document(p)
    return {
        "prescription_id": str(p.id),
        "signed_prescription_id": str(signed_id),
        "refill": p.refill_of is not None,
        "requests": {
            item["product_id"]: {
                "id": fhir.medication_request_id(signed_id, item["product_id"]),
                "identifier": {
                    "system": fhir.SYSTEM_PRESCRIPTION,
                    "value": f"{signed_id}/{item['product_id']}",
                },
            }
            for item in document["items"]
        },
    }


def prescribed_item(session: Session, order_id: uuid.UUID, product_id: int) -> dict | None:
    """Return the signed item of the order's approved prescription for `product_id` (with its
    `duration_days` and `substitution_allowed`), or None."""
    p = session.scalar(
        select(Prescription)
        .where(
            Prescription.order_id == order_id,
            Prescription.status.in_((S.APPROVED, S.DISPENSED)),
        )
        .order_by(Prescription.requested_at.desc(), Prescription.id)
        .limit(1)
    )
    if p is None:
        return None
    for item in issuing.signed_document(p)["items"]:
        if item["product_id"] == product_id:
            return item
    return None


def order_safety(session: Session, order: Order, *, adding: Sequence[int] = ()) -> dict:
    """The patient's coded allergies and the allergy and interaction warnings for the order, for
    the pharmacist reviewing it (or substituting `adding` on it)."""
    return safety.order_warnings(session, order.id, order.patient_id, adding=adding)
