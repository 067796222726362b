"""The store's actions on an order (prepare, ready, hand over) and cancellation."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from dispatch import runs as dispatch_runs
from dispatch import service as dispatch_service
from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext as _
from o2o.i18n import ngettext
from o2o.orders import lifecycle, states
from o2o.orders.models import Fulfillment, Order, OrderStatus
from o2o.payments import service as payments_service
from o2o.security import codes_equal
from o2o.users.models import Role, User

S = OrderStatus


class WrongPickupCode(InvalidInput):
    """A wrong pickup code; the failed try is counted, so the caller must keep that change."""

    code = "wrong_pickup_code"


class PickupCodeLocked(Conflict):
    code = "pickup_code_locked"


class OrderStockShort(Conflict):
    code = "order_stock_short"


def _check_stock(order: Order) -> None:
    """Refuse to work an order a store count took stock from until it is moved to another lot."""
    if order.stock_short_at is not None:
        raise OrderStockShort(
            _(
                "The store's count took stock this order held: move it to another lot (reallocate) or cancel it, which refunds it."
            ),
        )


# What the patient's app encodes as a QR code for the counter: the order and its pickup code, so a
# scan cannot hand over another order by mistake.


# What the patient's app encodes as a QR code for the counter: the order and its pickup code, so a
# scan cannot hand over another order by mistake.
PICKUP_QR_PREFIX = "O2O-PICKUP"


def pickup_qr(order: Order) -> str:
    """Return the QR payload that stands for the order's pickup code."""
    return f"{PICKUP_QR_PREFIX}:{order.id}:{order.pickup_code}"


def _shown_code(order: Order, shown: str) -> str | None:
    """Return the 6-digit code in what the patient showed, or None for another order's QR."""
    if not shown.startswith(PICKUP_QR_PREFIX + ":"):
        return shown
    parts = shown.split(":")
    if len(parts) != 3:
        return None
    try:
        same_order = uuid.UUID(parts[1]) == order.id
    except ValueError:
        same_order = False
    return parts[2] if same_order else None


def cancel_order(session: Session, order: Order, *, reason: str, actor_id: int | None) -> None:
    """Cancel a locked order: stock back on the shelf, its prescription request and courier
    job (if any) closed."""
    lifecycle.cancel(session, order, reason=reason, actor_id=actor_id)


def cancel_by(session: Session, user: User, order: Order, reason: str) -> None:
    """Cancel for a caller: a patient only until the courier has it; staff any open order."""
    if user.role is Role.PATIENT and order.status not in states.PATIENT_CANCELLABLE:
        raise states.IllegalTransition(
            _("This order can no longer be cancelled: it is {status}.").format(
                status=order.status.value.replace("_", " ")
            ),
            details={"status": order.status.value, "requested": S.CANCELLED.value},
        )
    cancel_order(session, order, reason=reason, actor_id=user.id)


def prepare(session: Session, order: Order, *, actor_id: int, now: datetime | None = None) -> None:
    """Start preparing a released order (a delivery's promise is checked first)."""
    _check_stock(order)
    now = now or clock.now()
    if order.fulfillment is Fulfillment.DELIVERY:
        dispatch_service.before_preparing(session, order, now=now)
    lifecycle.transition(session, order, S.PREPARING, actor_id=actor_id, at=now)
    if order.fulfillment is Fulfillment.DELIVERY:
        dispatch_service.open_job_while_preparing(session, order, now=now)


def mark_ready(session: Session, order: Order, *, actor_id: int, now: datetime | None = None):
    """Mark a prepared order ready: a pickup waits for its patient, a delivery opens a job."""
    if order.status is not S.PREPARING:
        # The workflow also allows ready after a failed delivery; that is the courier's path.
        raise states.IllegalTransition(
            _("Only an order being prepared can become ready; this one is {status}.").format(
                status=order.status.value.replace("_", " ")
            ),
            details={"status": order.status.value, "requested": S.READY.value},
        )
    _check_stock(order)
    now = now or clock.now()
    lifecycle.transition(session, order, S.READY, actor_id=actor_id, at=now)
    if order.fulfillment is Fulfillment.PICKUP:
        order.hold_expires_at = now + timedelta(hours=get_settings().pickup_hold_hours)
        session.flush()
    elif order.fulfillment is Fulfillment.PICKUP_POINT:
        dispatch_runs.on_parcel_ready(session, order, now=now)  # the run's job goes on the board
    else:
        dispatch_service.open_job_for_order(session, order)


def handover(
    session: Session,
    order: Order,
    pickup_code: str,
    *,
    actor_id: int,
    payment_collected: bool = False,
) -> None:
    """Hand a ready pickup to the patient who shows the code (typed, or scanned from the QR);
    stock leaves the shelf.

    A wrong code counts a try and raises WrongPickupCode: the caller commits that count before
    answering. After the allowed tries the code is locked (409 `pickup_code_locked`). A
    pay-at-store order needs `payment_collected` (409 `payment_not_collected` without it).
    """
    if order.fulfillment is Fulfillment.PICKUP_POINT:
        raise states.IllegalTransition(
            "This order is collected at its pickup point: the point's leader hands it over.",
            code="not_a_pickup_order",
        )
    if order.fulfillment is not Fulfillment.PICKUP:
        raise states.IllegalTransition(
            _("This is a delivery order: the courier hands it over."),
            code="not_a_pickup_order",
        )
    states.check(order.status, S.COMPLETED, order.fulfillment)
    _check_stock(order)
    allowed = get_settings().pickup_code_max_failures
    if order.pickup_code_failures >= allowed:
        raise PickupCodeLocked(
            _(
                "Too many wrong pickup codes: the code is locked. Check the patient's identity and ask an administrator to hand the order over."
            ),
        )
    code = _shown_code(order, pickup_code)
    if code is None or not codes_equal(code, order.pickup_code):
        order.pickup_code_failures += 1
        session.flush()
        left = allowed - order.pickup_code_failures
        raise WrongPickupCode(
            ngettext(
                "The pickup code is wrong; {left} try left.",
                "The pickup code is wrong; {left} tries left.",
                left,
            ).format(left=left),
            details={"tries_left": left},
        )
    payments_service.collect_at_store(
        session, order, collected=payment_collected, actor_id=actor_id
    )
    lifecycle.complete(session, order, actor_id=actor_id)
