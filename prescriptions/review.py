"""The pharmacist's review: the stored signature checked again now, the order checked against
what was signed, the held lots made to last the course, then approve (the order is released) or
reject (the order is cancelled); and the warning of the same medicine dispensed lately."""

import uuid
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext
from o2o.orders import lifecycle
from o2o.orders.models import LotAllocation, Order, OrderLine, OrderStatus
from o2o.users.models import User
from prescriptions import doctor_keys, issuing, refills, signing, trail, workflow
from prescriptions.models import DoctorKey, DoctorKeyStatus, Prescription
from prescriptions.schemas import ReviewIn
from prescriptions.workflow import PrescriptionStatus
from stores import allocation
from stores import service as stores_service
from stores.models import Product, Store

S = PrescriptionStatus


def verify_stored_signature(session: Session, p: Prescription) -> tuple[bool, DoctorKey | None]:
    """Check the stored signature now: (verifies, key). A revoked key never verifies."""
    key = doctor_keys.key_for_share(session, p.doctor_key_id) if p.doctor_key_id else None
    if key is None or p.signature is None or p.signed_payload is None:
        return False, key
    if key.status is DoctorKeyStatus.REVOKED:
        return False, key
    return signing.verify(key.public_key, p.signed_payload, p.signature), key


def _course_ends(
    durations: Mapping[int, int], issued_at: datetime, at: datetime, fills_before: int
) -> dict[int, date]:
    """The day each prescribed product's course ends, for the fill approved at `at`.

    The first fill's course starts when the doctor signed. A refill's starts once the fills
    before it are taken, and not before it is handed over: the later of the two.
    """
    if fills_before == 0:
        return {pid: workflow.course_end(issued_at, days) for pid, days in durations.items()}
    return {
        pid: max(
            workflow.course_end(issued_at, days * (fills_before + 1)),
            workflow.course_end(at, days),
        )
        for pid, days in durations.items()
    }


def _keep_lots_for_course(
    session: Session, order: Order, course_ends: dict[int, date], at: datetime
) -> list[dict]:
    """Move the reservation of prescription items to lots that last the course, or refuse.

    The lots are stock, moved by `stores.allocation`; the order's allocation rows are the order
    record, rewritten here to match.
    """
    lines = [line for line in order.lines if line.rx_only and line.product_id in course_ends]
    if not lines:
        return []
    store = session.get(Store, order.store_id)
    # The store's shelf-life rule, counted from its own local day.
    shelf_floor = stores_service.min_sellable_expiry(store, at)
    holds = [
        allocation.HeldUnits(
            product_id=line.product_id,
            held=[(a.lot_id, a.quantity) for a in line.allocations],
            keep_until=course_ends[line.product_id],
            min_expiry=max(course_ends[line.product_id], shelf_floor),
        )
        for line in lines
    ]
    try:
        moves = allocation.move_reservations(session, order.store_id, holds)
    except allocation.InsufficientStock as exc:
        raise Conflict(
            gettext(
                "The store's stock of a prescribed medicine expires before the course ends, and no longer-dated lot can cover it."
            ),
            code="lots_expire_before_course_end",
            details={
                "items": [
                    {
                        "product_id": s.product_id,
                        "quantity": s.quantity_missing,
                        "course_ends": course_ends[s.product_id].isoformat(),
                    }
                    for s in exc.shortages
                ]
            },
        ) from None
    by_product = {line.product_id: line for line in lines}
    moved = []
    for move in moves:
        line = by_product[move.product_id]
        current = {a.lot_id: a for a in line.allocations}
        for lot_id, _ in move.released:
            session.delete(current.pop(lot_id))
        session.flush()
        for a in move.reserved:
            if a.lot_id in current:
                current[a.lot_id].quantity += a.quantity
            else:
                session.add(
                    LotAllocation(order_line_id=line.id, lot_id=a.lot_id, quantity=a.quantity)
                )
        session.flush()
        session.expire(line, ["allocations"])
        moved.append(
            {
                "product_id": move.product_id,
                "from_lots": sorted(lot_id for lot_id, _ in move.released),
                "to_lots": sorted(a.lot_id for a in move.reserved),
            }
        )
    return moved


def _as_prescribed(lines, items: list[dict]) -> dict[int, int]:
    """Return, per order line id, the product the prescription must name for it: the product
    given, or, for an equivalent standing in, the asked product when the prescription names it
    and allows substitution (409 substitution_not_allowed when it names it without)."""
    named = {item["product_id"]: item for item in items}
    result = {}
    for li in lines:
        asked = li.requested_product_id
        if asked is None or li.product_id in named or asked not in named:
            result[li.id] = li.product_id
        elif named[asked].get("substitution_allowed", False):
            result[li.id] = asked
        else:
            raise Conflict(
                "The prescription does not allow an equivalent for "
                f"{named[asked].get('product_name', asked)}; the order holds one.",
                code="substitution_not_allowed",
                details={"product_id": asked, "given_product_id": li.product_id},
            )
    return result


def review(
    session: Session, pharmacist: User, prescription_id: uuid.UUID, body: ReviewIn
) -> tuple[Prescription, Order, list[dict]]:
    """Approve (releasing the order) or reject (cancelling it) an issued prescription."""
    p = session.get(Prescription, prescription_id)
    if p is None or trail.store_id_of(session, p) not in pharmacist.store_ids:
        raise trail.not_found()
    order, p = trail.lock_order_then_prescription(session, prescription_id)
    at = clock.now()
    if p.status in workflow.USED_STATES:
        raise Conflict(
            gettext("This prescription has already been used."),
            code="prescription_used",
            details={"status": p.status.value},
        )
    if p.status is S.EXPIRED:
        raise Conflict(gettext("This prescription has expired."), code="prescription_expired")
    if p.status is not S.ISSUED:
        raise workflow.IllegalPrescriptionTransition(
            gettext("This prescription is {value}, not issued; there is nothing to review.").format(
                value=p.status.value
            ),
            details={"status": p.status.value},
        )

    if body.decision == "reject":
        trail.move(session, p, S.REJECTED, "rejected", actor=pharmacist, at=at, reason=body.reason)
        p.reviewed_by = pharmacist.id
        p.reviewed_at = at
        p.review_reason = body.reason
        trail.emit(session, "prescription.rejected", p, order.store_id, reason=body.reason)
        session.flush()
        lifecycle.cancel(
            session,
            order,
            reason=f"The pharmacist rejected the prescription: {body.reason}",
            actor_id=pharmacist.id,
        )
        return p, order, []

    verifies, key = verify_stored_signature(session, p)
    if key is not None and key.status is DoctorKeyStatus.REVOKED:
        raise Conflict(
            gettext(
                "The doctor's signing key has been revoked; this prescription cannot be accepted."
            ),
            code="key_revoked",
        )
    if not verifies:
        raise Conflict(gettext("The doctor's signature does not verify."), code="invalid_signature")
    # Decide from what was signed, not from copies that could have been altered.
    document = issuing.signed_document(p)
    expires_at = issuing.parse_signed_time(document["validity"]["expires_at"])
    issued_at = issuing.parse_signed_time(document["validity"]["issued_at"])
    if at >= expires_at:
        raise Conflict(
            gettext("This prescription has expired."),
            code="prescription_expired",
            details={"expired_at": expires_at.isoformat()},
        )
    # Fills are counted on the first prescription; a refill locks it (after the order and the
    # refill, the order every path takes) so two refills racing cannot both take the last fill.
    first = p if p.refill_of is None else trail.lock(session, p.refill_of)
    if first.fills_used > document["refills"]:
        raise Conflict(
            "This prescription has already been used."
            + (" It has no refills left." if first is not p else ""),
            code="prescription_used",
            details={"refills": document["refills"], "fills_used": first.fills_used},
        )
    if document["patient"]["id"] != order.patient_id or document["prescription_id"] != str(
        first.id
    ):
        raise Conflict(gettext("The prescription is for another patient."), code="patient_mismatch")
    if first is not p:
        refills.check_last_fill_handed_over(session, first)
    if order.status is not OrderStatus.AWAITING_PRESCRIPTION:
        raise Conflict(
            gettext("The order is not waiting for a prescription."),
            code="order_not_awaiting_prescription",
            details={"order_status": order.status.value},
        )
    prescribed = [
        workflow.PrescribedItem(i["product_id"], i["quantity"], i["duration_days"])
        for i in document["items"]
    ]
    as_prescribed = _as_prescribed(order.lines, document["items"])
    problems = workflow.items_outside_prescription(
        [workflow.OrderedItem(as_prescribed[li.id], li.quantity, li.rx_only) for li in order.lines],
        prescribed,
    )
    if problems:
        raise InvalidInput(
            gettext("The order holds prescription medicines beyond what the prescription allows."),
            code="exceeds_prescription",
            details={"items": problems},
        )
    fills_before = 0 if first is p else first.fills_used
    ends = _course_ends(workflow.durations_by_product(prescribed), issued_at, at, fills_before)
    for li in order.lines:  # an equivalent's lots must last the course prescribed for the asked
        if as_prescribed[li.id] != li.product_id and as_prescribed[li.id] in ends:
            ends[li.product_id] = ends[as_prescribed[li.id]]
    moved = _keep_lots_for_course(session, order, ends, at)
    trail.move(
        session,
        p,
        S.APPROVED,
        "approved",
        actor=pharmacist,
        at=at,
        reason=body.reason,
        details={"reallocated": moved} if moved else None,
    )
    first.fills_used += 1
    if first is not p:
        trail.audit(
            session,
            first,
            "refill_approved",
            actor=pharmacist,
            from_status=first.status,
            to_status=first.status,
            at=at,
            reason=f"Refill {p.id} approved for order {order.id}: fill {first.fills_used} of "
            f"{first.refills + 1}.",
            details={
                "refill": str(p.id),
                "order_id": str(order.id),
                "fills_used": first.fills_used,
            },
        )
    p.reviewed_by = pharmacist.id
    p.reviewed_at = at
    p.review_reason = body.reason
    trail.emit(session, "prescription.approved", p, order.store_id, pharmacist_id=pharmacist.id)
    session.flush()
    lifecycle.transition(
        session,
        order,
        OrderStatus.RELEASED,
        actor_id=pharmacist.id,
        reason="Prescription approved by the pharmacist.",
        at=at,
    )
    return p, order, moved


def repeat_dispense_warnings(session: Session, p: Prescription) -> list[dict]:
    """Warn when the patient had the same medicine (same product or generic) dispensed lately."""
    days = get_settings().prescription_repeat_warning_days
    if days <= 0:
        return []
    if p.items:
        product_ids = sorted({item["product_id"] for item in p.items})
    else:
        product_ids = sorted(
            session.scalars(
                select(OrderLine.product_id).where(
                    OrderLine.order_id == p.order_id, OrderLine.rx_only.is_(True)
                )
            )
        )
    if not product_ids:
        return []
    generics = dict(
        session.execute(
            select(Product.id, func.lower(Product.generic_name)).where(Product.id.in_(product_ids))
        ).all()
    )
    since = clock.now() - timedelta(days=days)
    rows = session.execute(
        select(OrderLine.product_id, func.lower(Product.generic_name), Order.id, Order.completed_at)
        .join(Order, Order.id == OrderLine.order_id)
        .join(Product, Product.id == OrderLine.product_id)
        .where(
            Order.patient_id == p.patient_id,
            Order.status == OrderStatus.COMPLETED,
            Order.completed_at >= since,
            Order.id != p.order_id,
            or_(
                OrderLine.product_id.in_(product_ids),
                func.lower(Product.generic_name).in_(sorted(set(generics.values()))),
            ),
        )
        .order_by(Order.completed_at.desc())
    ).all()
    warnings = []
    seen = set()
    for product_id, generic, order_id, completed_at in rows:
        for ours, our_generic in generics.items():
            if (ours == product_id or our_generic == generic) and ours not in seen:
                seen.add(ours)
                warnings.append(
                    {
                        "code": "recently_dispensed",
                        "message": gettext(
                            "The patient had this medicine dispensed on {day} (within {days} days)."
                        ).format(day=completed_at.date().isoformat(), days=days),
                        "product_id": ours,
                        "order_id": order_id,
                        "dispensed_at": completed_at,
                    }
                )
    return warnings
