"""What every prescription step shares: loading and locking rows, who may see a prescription, the
checked state change with its audit entry, and the outbox event.

Locks are taken in one order across the domain: the order row, then the prescription row (then
the first prescription of a refill), then lots by id, so two decisions on the same order never
deadlock.
"""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import outbox
from o2o.errors import NotFound
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.orders.models import Order
from o2o.users.models import Role, User
from prescriptions import workflow
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.workflow import PrescriptionStatus

# --- loading and visibility --------------------------------------------------------------------


def not_found() -> NotFound:
    """Return the 404 for a prescription that does not exist or that the caller may not see."""
    return NotFound(_("No such prescription."), code="prescription_not_found")


def store_id_of(session: Session, p: Prescription) -> int:
    """Return the store of the prescription's order."""
    return session.scalar(select(Order.store_id).where(Order.id == p.order_id))


def store_ids_of(session: Session, rows: list[Prescription]) -> dict[uuid.UUID, int]:
    """Return the store of each row's order, keyed by order id, in one query."""
    if not rows:
        return {}
    return dict(
        session.execute(
            select(Order.id, Order.store_id).where(Order.id.in_({p.order_id for p in rows}))
        ).all()
    )


def can_view(user: User, p: Prescription, store_id: int) -> bool:
    """Say whether user may see the prescription: owner, its doctor, the store's pharmacist,
    an admin."""
    if user.role is Role.ADMIN:
        return True
    if user.role is Role.PATIENT:
        return p.patient_id == user.id
    if user.role is Role.DOCTOR:
        return p.doctor_id == user.id
    if user.role is Role.PHARMACIST:
        return store_id in user.store_ids
    return False


def get_visible(session: Session, user: User, prescription_id: uuid.UUID) -> Prescription:
    """Load a prescription the user may see, or 404 (whether it exists or not)."""
    p = session.get(Prescription, prescription_id)
    if p is None or not can_view(user, p, store_id_of(session, p)):
        raise not_found()
    return p


def review_since(p: Prescription) -> datetime:
    """When the prescription reached the pharmacist: at issue, or a refill when it was asked for."""
    return max(p.issued_at, p.requested_at)


# --- locks -------------------------------------------------------------------------------------


def lock(session: Session, prescription_id: uuid.UUID) -> Prescription:
    """Lock a prescription row (FOR UPDATE) and return it fresh, or 404."""
    p = session.scalar(
        select(Prescription)
        .where(Prescription.id == prescription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if p is None:
        raise not_found()
    return p


def lock_order_then_prescription(
    session: Session, prescription_id: uuid.UUID
) -> tuple[Order, Prescription]:
    """Lock the prescription's order, then the prescription (the domain's lock order)."""
    p = session.get(Prescription, prescription_id)
    if p is None:
        raise not_found()
    order = lifecycle.lock_order(session, p.order_id)
    return order, lock(session, prescription_id)


# --- the trail: audit entries, state changes, events -------------------------------------------


def audit(
    session: Session,
    p: Prescription,
    action: str,
    *,
    actor: User | None,
    from_status: PrescriptionStatus | None,
    to_status: PrescriptionStatus,
    at: datetime,
    reason: str | None = None,
    details: dict | None = None,
) -> None:
    """Append an entry to the prescription's audit trail (no actor: the system acted)."""
    session.add(
        PrescriptionAudit(
            prescription_id=p.id,
            action=action,
            actor_id=actor.id if actor else None,
            actor_role=actor.role.value if actor else "system",
            at=at,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            details=details,
        )
    )


def move(
    session: Session,
    p: Prescription,
    to: PrescriptionStatus,
    action: str,
    *,
    actor: User | None,
    at: datetime,
    reason: str | None = None,
    details: dict | None = None,
) -> None:
    """Apply a checked state change and append its audit entry."""
    workflow.check(p.status, to)
    previous = p.status
    p.status = to
    audit(
        session,
        p,
        action,
        actor=actor,
        from_status=previous,
        to_status=to,
        at=at,
        reason=reason,
        details=details,
    )


def emit(session: Session, event_type: str, p: Prescription, store_id: int, **extra) -> None:
    """Publish a prescription event through the outbox (sent once the transaction commits)."""
    payload = {
        "prescription_id": str(p.id),
        "order_id": str(p.order_id),
        "store_id": store_id,
        "patient_id": p.patient_id,
        "status": p.status.value,
        **extra,
    }
    outbox.emit(session, event_type, "prescription", p.id, payload)


def clear_pending(p: Prescription) -> None:
    """Forget the prepared signing payload (issued, declined or cancelled: no longer signable)."""
    p.pending_payload = None
    p.pending_payload_at = None
    p.pending_key_id = None
