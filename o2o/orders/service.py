"""Orders after placement: who may see them, the store's actions (prepare, ready, hand over),
cancellation with the stock returned, and the view of an order a caller may see."""

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from dispatch import service as dispatch_service
from o2o.config import get_settings
from o2o.errors import Conflict, Forbidden, InvalidInput, NotFound
from o2o.geo import to_latlon
from o2o.orders import lifecycle, workflow
from o2o.orders.models import Fulfillment, Order, OrderStatus
from o2o.orders.schemas import OrderOut
from o2o.security import codes_equal
from o2o.users.models import Role, User
from prescriptions import service as prescriptions_service
from stores.models import Store

S = OrderStatus

ORDER_READERS = frozenset({Role.PATIENT, Role.PHARMACIST, Role.ADMIN})
STORE_STAFF = frozenset({Role.PHARMACIST, Role.ADMIN})


class WrongPickupCode(InvalidInput):
    """A wrong pickup code; the failed try is counted, so the caller must keep that change."""

    code = "wrong_pickup_code"


class PickupCodeLocked(Conflict):
    code = "pickup_code_locked"


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


def _not_found() -> NotFound:
    return NotFound("No such order.", code="order_not_found")


def can_see(user: User, order: Order) -> bool:
    """Say whether the user may see this order (its patient, its store's staff, an admin)."""
    if user.role is Role.ADMIN:
        return True
    if user.role is Role.PATIENT:
        return order.patient_id == user.id
    if user.role is Role.PHARMACIST:
        return order.store_id in user.store_ids
    return False


def is_store_staff_for(user: User, order: Order) -> bool:
    return user.role is Role.ADMIN or (
        user.role is Role.PHARMACIST and order.store_id in user.store_ids
    )


def get_order(session: Session, user: User, order_id: uuid.UUID, *, lock: bool = False) -> Order:
    """Load an order the user may see (locked FOR UPDATE if asked); 404 otherwise."""
    if user.role not in ORDER_READERS:
        raise Forbidden("Your role may not read orders.")
    if lock:
        try:
            order = lifecycle.lock_order(session, order_id)
        except NotFound:
            raise _not_found() from None
    else:
        order = session.get(Order, order_id)
    # Someone else's order looks exactly like one that does not exist.
    if order is None or not can_see(user, order):
        raise _not_found()
    return order


def get_order_for_staff(session: Session, user: User, order_id: uuid.UUID) -> Order:
    """Load and lock an order for its store's staff (or an admin); 404 for anyone else's."""
    if user.role not in STORE_STAFF:
        raise Forbidden("Only the store's staff may do this.")
    order = get_order(session, user, order_id, lock=True)
    if not is_store_staff_for(user, order):
        raise _not_found()
    return order


def cancel_order(session: Session, order: Order, *, reason: str, actor_id: int | None) -> None:
    """Cancel a locked order: stock back on the shelf, its prescription request and courier
    job (if any) closed."""
    lifecycle.cancel(session, order, reason=reason, actor_id=actor_id)
    if order.is_rx:
        prescriptions_service.on_order_cancelled(session, order)
    if order.fulfillment is Fulfillment.DELIVERY:
        dispatch_service.on_order_cancelled(session, order)


def cancel_by(session: Session, user: User, order: Order, reason: str) -> None:
    """Cancel for a caller: a patient only until the courier has it; staff any open order."""
    if user.role is Role.PATIENT and order.status not in workflow.PATIENT_CANCELLABLE:
        raise workflow.IllegalTransition(
            f"This order can no longer be cancelled: it is {order.status.value.replace('_', ' ')}.",
            details={"status": order.status.value, "requested": S.CANCELLED.value},
        )
    cancel_order(session, order, reason=reason, actor_id=user.id)


def prepare(session: Session, order: Order, *, actor_id: int) -> None:
    """Start preparing a released order."""
    lifecycle.transition(session, order, S.PREPARING, actor_id=actor_id)


def mark_ready(session: Session, order: Order, *, actor_id: int, now: datetime | None = None):
    """Mark a prepared order ready: a pickup waits for its patient, a delivery opens a job."""
    if order.status is not S.PREPARING:
        # The workflow also allows ready after a failed delivery; that is the courier's path.
        raise workflow.IllegalTransition(
            f"Only an order being prepared can become ready; this one is "
            f"{order.status.value.replace('_', ' ')}.",
            details={"status": order.status.value, "requested": S.READY.value},
        )
    now = now or lifecycle.now_utc()
    lifecycle.transition(session, order, S.READY, actor_id=actor_id, at=now)
    if order.fulfillment is Fulfillment.PICKUP:
        order.hold_expires_at = now + timedelta(hours=get_settings().pickup_hold_hours)
        session.flush()
    else:
        dispatch_service.open_job_for_order(session, order)


def handover(session: Session, order: Order, pickup_code: str, *, actor_id: int) -> None:
    """Hand a ready pickup to the patient who shows the code (typed, or scanned from the QR);
    stock leaves the shelf.

    A wrong code counts a try and raises WrongPickupCode: the caller commits that count before
    answering. After the allowed tries the code is locked (409 `pickup_code_locked`).
    """
    if order.fulfillment is not Fulfillment.PICKUP:
        raise workflow.IllegalTransition(
            "This is a delivery order: the courier hands it over.",
            code="not_a_pickup_order",
        )
    workflow.check(order.status, S.COMPLETED, order.fulfillment)
    allowed = get_settings().pickup_code_max_failures
    if order.pickup_code_failures >= allowed:
        raise PickupCodeLocked(
            "Too many wrong pickup codes: the code is locked. Check the patient's identity and "
            "ask an administrator to hand the order over.",
        )
    code = _shown_code(order, pickup_code)
    if code is None or not codes_equal(code, order.pickup_code):
        order.pickup_code_failures += 1
        session.flush()
        left = allowed - order.pickup_code_failures
        raise WrongPickupCode(
            f"The pickup code is wrong; {left} {'try' if left == 1 else 'tries'} left.",
            details={"tries_left": left},
        )
    lifecycle.complete(session, order, actor_id=actor_id)
    if order.is_rx:
        prescriptions_service.mark_dispensed(session, order, actor_id=actor_id)


# Listing ---------------------------------------------------------------------------------------


def encode_cursor(order: Order) -> str:
    raw = f"{order.created_at.isoformat()}|{order.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, order_id = raw.split("|", 1)
        return datetime.fromisoformat(created), uuid.UUID(order_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("The cursor is not valid.", code="invalid_cursor") from None


def list_orders(
    session: Session,
    user: User,
    *,
    store_id: int | None = None,
    status: OrderStatus | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[Order], str | None]:
    """List the orders a caller may see, newest first: a patient's own, or a store's for staff."""
    query = select(Order)
    if user.role is Role.PATIENT:
        query = query.where(Order.patient_id == user.id)
        if store_id is not None:
            query = query.where(Order.store_id == store_id)
    elif user.role is Role.PHARMACIST:
        if store_id is not None and store_id not in user.store_ids:
            raise NotFound("No such store.", code="store_not_found")
        query = query.where(Order.store_id.in_([store_id] if store_id else user.store_ids))
    elif user.role is Role.ADMIN:
        if store_id is not None:
            query = query.where(Order.store_id == store_id)
    else:
        raise Forbidden("Your role may not read orders.")
    if status is not None:
        query = query.where(Order.status == status)
    if cursor:
        created, order_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Order.created_at < created,
                and_(Order.created_at == created, Order.id < order_id),
            )
        )
    rows = session.scalars(
        query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    return page, (encode_cursor(page[-1]) if len(rows) > limit else None)


# The view --------------------------------------------------------------------------------------


def prescription_id_for(session: Session, order: Order) -> uuid.UUID | None:
    """Ask the prescriptions domain which prescription belongs to the order (the one place)."""
    if not order.is_rx:
        return None
    return prescriptions_service.prescription_id_for_order(session, order.id)


def present(
    session: Session,
    order: Order,
    viewer: User,
    *,
    store_names: dict[int, str] | None = None,
    prescription_ids: dict[uuid.UUID, uuid.UUID] | None = None,
) -> OrderOut:
    """Build the order view for this viewer (codes only for the order's own patient); a page
    passes the store names and prescription ids it read at once."""
    if store_names is None or order.store_id not in store_names:
        store = session.get(Store, order.store_id)
        name = store.name if store else ""
    else:
        name = store_names[order.store_id]
    own = viewer.role is Role.PATIENT and viewer.id == order.patient_id
    address = None
    if order.delivery_location is not None:
        address = {
            "location": to_latlon(order.delivery_location),
            "text": order.delivery_address_text,
        }
    return OrderOut(
        id=order.id,
        status=order.status,
        fulfillment=order.fulfillment,
        store={"id": order.store_id, "name": name},
        routing_reason=order.routing_reason,
        lines=[
            {
                "product_id": line.product_id,
                "quantity": line.quantity,
                "price_minor": line.price_minor,
            }
            for line in order.lines
        ],
        subtotal_minor=order.subtotal_minor,
        delivery_fee_minor=order.delivery_fee_minor,
        compensation_minor=order.compensation_minor,
        total_minor=order.total_minor,
        currency=order.currency,
        delivery_address=address,
        created_at=order.created_at,
        released_at=order.released_at,
        ready_at=order.ready_at,
        completed_at=order.completed_at,
        cancelled_at=order.cancelled_at,
        cancel_reason=order.cancel_reason,
        sla_deadline=order.sla_deadline,
        hold_expires_at=order.hold_expires_at,
        prescription_id=(
            prescription_ids.get(order.id)
            if prescription_ids is not None
            else prescription_id_for(session, order)
        ),
        pickup_code=order.pickup_code if own else None,
        pickup_qr=pickup_qr(order) if own and order.fulfillment is Fulfillment.PICKUP else None,
        delivery_code=order.delivery_code if own else None,
        timeline=[{"status": e.to_status, "at": e.at, "reason": e.reason} for e in order.events],
    )


def present_many(session: Session, orders: Sequence[Order], viewer: User) -> list[OrderOut]:
    """Build views for a page of orders (store names and prescriptions read once)."""
    ids = sorted({o.store_id for o in orders})
    names = dict(session.execute(select(Store.id, Store.name).where(Store.id.in_(ids))).all())
    rx = prescriptions_service.prescription_ids_for_orders(
        session, [o.id for o in orders if o.is_rx]
    )
    return [present(session, o, viewer, store_names=names, prescription_ids=rx) for o in orders]
