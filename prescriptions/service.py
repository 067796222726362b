"""Prescriptions as other floors see them: which prescription an order has, and what happens to
it when its order is cancelled or handed over (subscribed to the order events in `o2o.wiring`).

The steps themselves live by job: `requests`, `refills`, `doctor_keys`, `issuing`, `review`, `queue`,
`views`, `sweeps`, `audit`; what they share is in `trail`.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.users.models import User
from prescriptions import refills, trail, workflow
from prescriptions.models import Prescription
from prescriptions.workflow import PrescriptionStatus

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
    at = clock.now()
    trail.move(session, p, S.DISPENSED, "dispensed", actor=actor, at=at)
    p.dispensed_at = at
    session.flush()
