"""Substitution at the counter: a pharmacist gives an equivalent on a line of a released order.

Consent. A line whose `substitution` is "allowed" (the patient's word at checkout; the default
for over-the-counter items) counts as consent given up front: the equivalent replaces the line
at once and the patient is told. Otherwise the patient is asked (an `order.substitution_proposed`
event through the outbox, for the app) and accepts or declines; until then the equivalent's lots
are held for the answer and the line keeps its own. A prescription item is substituted only
where the order's signed prescription allows it (`substitution_allowed` on its item), whatever
the patient said.

Stock moves only through `stores.allocation`: with consent, one `swap` gives the line's lots back
and reserves the equivalent's FEFO, all or nothing under one lock; asked, the equivalent is
reserved when proposed (`reserve_lines`), and an acceptance gives the old lots back (`release`),
a decline or a cancelled or completed order gives the held ones back.

Money. The line is charged at the equivalent's price; the difference goes through the payment
flow: refunded on a captured online payment when cheaper, charged on it (a `payment_charges`
request to the payment app) when dearer; a payment at the counter simply takes the new total.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dispatch import runs as dispatch_runs
from o2o import clock, outbox
from o2o.errors import Conflict, InvalidInput, NotFound
from o2o.order_flow import access
from o2o.orders.models import (
    Fulfillment,
    LotAllocation,
    Order,
    OrderLine,
    OrderStatus,
    OrderSubstitution,
)
from o2o.payments import service as payments_service
from o2o.payments.models import PaymentMethod, PaymentStatus
from o2o.users.models import Role, User
from prescriptions import service as prescriptions_service
from stores import allocation, equivalents
from stores import service as stores_service
from stores.models import Product, Store

REASONS = ("out_of_stock", "formulary", "patient_request")
# A pharmacist substitutes on an order released to the store and not yet handed over.
SUBSTITUTABLE = frozenset({OrderStatus.RELEASED, OrderStatus.PREPARING, OrderStatus.READY})

PENDING, ACCEPTED, DECLINED, WITHDRAWN = "pending", "accepted", "declined", "withdrawn"


def _at_the_store(session: Session, order: Order) -> bool:
    """Whether the order is still on the store's side of the counter. A pickup-point order is
    ready again once its run has brought it to the point, but it has left the store's shelves:
    from its run's departure on, it can no longer be substituted on."""
    if order.status not in SUBSTITUTABLE:
        return False
    if order.fulfillment is not Fulfillment.PICKUP_POINT:
        return True
    return not dispatch_runs.parcel_left_store(session, order.id)


def _unit_price(allocations: Sequence[allocation.Allocation], quantity: int) -> int:
    """Return the unit price over the lots allocated, rounded half up (as checkout does)."""
    total = sum(a.quantity * a.price_minor for a in allocations)
    return (2 * total + quantity) // (2 * quantity)


def _line(order: Order, product_id: int) -> OrderLine:
    for line in order.lines:
        if line.product_id == product_id:
            return line
    raise InvalidInput(
        "The order has no line of this product.",
        code="unknown_order_line",
        details={"product_id": product_id},
    )


def _notify(session: Session, event_type: str, order: Order, sub: OrderSubstitution) -> None:
    """Tell the patient's app (and the store's systems) through the outbox."""
    outbox.emit(
        session,
        event_type,
        "order",
        order.id,
        {
            "order_id": str(order.id),
            "store_id": order.store_id,
            "patient_id": order.patient_id,
            "substitution_id": str(sub.id),
            "from_product_id": sub.from_product_id,
            "to_product_id": sub.to_product_id,
            "from_quantity": sub.from_quantity,
            "to_quantity": sub.to_quantity,
            "reason": sub.reason,
            "difference_minor": sub.difference_minor,
            "currency": order.currency,
            "status": sub.status,
            "consent": sub.consent,
        },
    )


def propose(
    session: Session,
    staff: User,
    order_id: uuid.UUID,
    *,
    product_id: int,
    to_product_id: int,
    reason: str,
    now: datetime | None = None,
) -> OrderSubstitution:
    """Substitute an equivalent on a line of a released order (applied at once with consent up
    front, else held and asked of the patient)."""
    now = now or clock.now()
    order = access.get_order_for_staff(session, staff, order_id)
    if reason not in REASONS:
        raise InvalidInput(
            "The reason must be one of " + ", ".join(REASONS) + ".",
            code="invalid_substitution_reason",
        )
    if not _at_the_store(session, order):
        raise Conflict(
            "Only a released order not yet handed over can be substituted on.",
            code="order_not_substitutable",
            details={"order_status": order.status.value},
        )
    line = _line(order, product_id)
    source = session.get(Product, line.product_id)
    target = session.get(Product, to_product_id)
    if target is None:
        raise InvalidInput("No such product.", code="unknown_product")
    if target.controlled or not equivalents.are_equivalent(source, target):
        raise InvalidInput(
            f"{target.name} is not an equivalent of {source.name} (same generic name, strength, "
            "dosage form and route).",
            code="not_equivalent",
            details={"product_id": source.id, "to_product_id": target.id},
        )
    if any(other.product_id == target.id for other in order.lines):
        raise Conflict(
            "The order holds this product on another line already.",
            code="product_already_in_order",
        )
    quantity = equivalents.substitute_quantity(line.quantity, source.pack_size, target.pack_size)
    if quantity is None:
        raise InvalidInput(
            f"No whole number of packs of {target.name} gives the units of the line.",
            code="not_equivalent_quantity",
            details={"units": line.quantity * source.pack_size, "pack_size": target.pack_size},
        )
    asked_id = line.requested_product_id or line.product_id
    prescribed = (
        prescriptions_service.prescribed_item(session, order.id, asked_id) if line.rx_only else None
    )
    if line.rx_only and not (prescribed and prescribed.get("substitution_allowed", False)):
        raise Conflict(
            "The prescription does not allow an equivalent for this item.",
            code="substitution_not_allowed",
            details={"product_id": asked_id},
        )
    pending = session.scalar(
        select(OrderSubstitution.id).where(
            OrderSubstitution.order_line_id == line.id, OrderSubstitution.status == PENDING
        )
    )
    if pending is not None:
        raise Conflict(
            "The patient has not answered the last substitution on this line yet.",
            code="substitution_pending",
            details={"substitution_id": str(pending)},
        )

    store = session.get(Store, order.store_id)
    min_expiry = stores_service.min_sellable_expiry(store, now)
    if prescribed is not None:
        # A prescription item's lots must last the course; counted from now, which is no earlier
        # than the course's own start.
        min_expiry = max(min_expiry, (now + timedelta(days=prescribed["duration_days"])).date())
    up_front = line.substitution == "allowed"
    if up_front:
        chosen = allocation.swap(
            session,
            store.id,
            [(a.lot_id, a.quantity) for a in line.allocations],
            allocation.LineRequest(target.id, quantity),
            min_expiry=min_expiry,
        )
    else:
        chosen = allocation.reserve_lines(
            session, store.id, [allocation.LineRequest(target.id, quantity)], min_expiry=min_expiry
        )[target.id]
    price = _unit_price(chosen, quantity)
    sub = OrderSubstitution(
        id=uuid.uuid4(),
        order_id=order.id,
        order_line_id=line.id,
        from_product_id=line.product_id,
        to_product_id=target.id,
        from_quantity=line.quantity,
        to_quantity=quantity,
        from_price_minor=line.price_minor,
        to_price_minor=price,
        difference_minor=price * quantity - line.price_minor * line.quantity,
        reason=reason,
        consent="up_front" if up_front else "asked",
        status=ACCEPTED if up_front else PENDING,
        held=None if up_front else [[a.lot_id, a.quantity, a.price_minor] for a in chosen],
        requested_by=staff.id,
        requested_at=now,
        decided_at=now if up_front else None,
    )
    session.add(sub)
    session.flush()
    if up_front:
        _apply(session, order, line, sub, chosen, now)
        _notify(session, "order.substituted", order, sub)
    else:
        _notify(session, "order.substitution_proposed", order, sub)
    return sub


def _apply(
    session: Session,
    order: Order,
    line: OrderLine,
    sub: OrderSubstitution,
    chosen: Sequence[allocation.Allocation],
    now: datetime,
) -> None:
    """Put the equivalent on the line (its lots already reserved, the old ones given back) and
    settle the price difference."""
    session.execute(delete(LotAllocation).where(LotAllocation.order_line_id == line.id))
    line.requested_product_id = line.requested_product_id or line.product_id
    line.product_id = sub.to_product_id
    line.quantity = sub.to_quantity
    line.price_minor = sub.to_price_minor
    line.substitution_reason = sub.reason
    session.add_all(
        LotAllocation(order_line_id=line.id, lot_id=a.lot_id, quantity=a.quantity) for a in chosen
    )
    order.subtotal_minor += sub.difference_minor
    session.flush()
    session.expire(line, ["allocations"])
    _settle(session, order, sub, now)


def _settle(session: Session, order: Order, sub: OrderSubstitution, now: datetime) -> None:
    """Charge or refund the difference through the payment flow."""
    payment = payments_service.payment_of(session, order.id, lock=True)
    if payment is None or sub.difference_minor == 0:
        return
    note = f"Substitution {sub.id} ({sub.reason})."
    if payment.method is PaymentMethod.AT_STORE or payment.status is not PaymentStatus.CAPTURED:
        # Nothing taken yet: the counter (or the pending request's capture) takes the new total.
        payment.amount_minor = max(0, order.total_minor)
        session.flush()
        return
    if sub.difference_minor < 0:
        payments_service.request_refund(
            session,
            payment,
            -sub.difference_minor,
            reason=payments_service.REASON_SUBSTITUTION,
            note=note,
            now=now,
        )
    else:
        payments_service.request_charge(
            session,
            payment,
            sub.difference_minor,
            reason=payments_service.REASON_SUBSTITUTION,
            note=note,
            now=now,
        )


def _patients_substitution(
    session: Session, patient: User, order_id: uuid.UUID, substitution_id: uuid.UUID
) -> tuple[Order, OrderSubstitution]:
    """Load and lock the patient's order and the substitution on it; 404 for anyone else's."""
    order = access.get_order(session, patient, order_id, lock=True)
    if patient.role is not Role.PATIENT or order.patient_id != patient.id:
        raise NotFound("No such substitution.", code="substitution_not_found")
    sub = session.scalar(
        select(OrderSubstitution)
        .where(OrderSubstitution.id == substitution_id, OrderSubstitution.order_id == order.id)
        .with_for_update()
    )
    if sub is None:
        raise NotFound("No such substitution.", code="substitution_not_found")
    if sub.status != PENDING:
        raise Conflict(
            f"This substitution is {sub.status} already.",
            code="substitution_not_pending",
            details={"status": sub.status},
        )
    return order, sub


def _held(sub: OrderSubstitution) -> list[allocation.Allocation]:
    return [allocation.Allocation(lot_id, qty, price) for lot_id, qty, price in sub.held or []]


def accept(
    session: Session, patient: User, order_id: uuid.UUID, substitution_id: uuid.UUID
) -> OrderSubstitution:
    """Accept a pharmacist's substitution: the held equivalent fills the line, its old lots go
    back, and the difference is charged or refunded."""
    now = clock.now()
    order, sub = _patients_substitution(session, patient, order_id, substitution_id)
    if not _at_the_store(session, order):
        raise Conflict(
            "The order is no longer at the store's counter.",
            code="order_not_substitutable",
            details={"order_status": order.status.value},
        )
    line = session.get(OrderLine, sub.order_line_id)
    allocation.release(session, [(a.lot_id, a.quantity) for a in line.allocations])
    sub.status = ACCEPTED
    sub.decided_at = now
    chosen = _held(sub)
    sub.held = None
    _apply(session, order, line, sub, chosen, now)
    _notify(session, "order.substitution_accepted", order, sub)
    return sub


def decline(
    session: Session, patient: User, order_id: uuid.UUID, substitution_id: uuid.UUID
) -> OrderSubstitution:
    """Decline a pharmacist's substitution: the held equivalent goes back on the shelf."""
    order, sub = _patients_substitution(session, patient, order_id, substitution_id)
    _close(session, sub, DECLINED)
    _notify(session, "order.substitution_declined", order, sub)
    return sub


def _close(session: Session, sub: OrderSubstitution, status: str) -> None:
    allocation.release(session, [(a.lot_id, a.quantity) for a in _held(sub)])
    sub.status = status
    sub.held = None
    sub.decided_at = clock.now()
    session.flush()


def withdraw_pending(session: Session, order: Order, **_: object) -> None:
    """Give back what pending substitutions hold when their order closes (cancelled or handed
    over without an answer): subscribed to `order_cancelled` and `order_completed`."""
    for sub in session.scalars(
        select(OrderSubstitution)
        .where(OrderSubstitution.order_id == order.id, OrderSubstitution.status == PENDING)
        .order_by(OrderSubstitution.id)
        .with_for_update()
    ):
        _close(session, sub, WITHDRAWN)


def substitutions_of(session: Session, order_ids: Sequence[uuid.UUID]) -> dict:
    """Return the substitutions of several orders, by order id, oldest first."""
    if not order_ids:
        return {}
    found: dict[uuid.UUID, list[OrderSubstitution]] = {}
    for sub in session.scalars(
        select(OrderSubstitution)
        .where(OrderSubstitution.order_id.in_(list(order_ids)))
        .order_by(OrderSubstitution.requested_at, OrderSubstitution.id)
    ):
        found.setdefault(sub.order_id, []).append(sub)
    return found


def view(sub: OrderSubstitution) -> dict:
    """Describe a substitution as the API shows it."""
    return {
        "id": sub.id,
        "from_product_id": sub.from_product_id,
        "to_product_id": sub.to_product_id,
        "from_quantity": sub.from_quantity,
        "to_quantity": sub.to_quantity,
        "from_price_minor": sub.from_price_minor,
        "to_price_minor": sub.to_price_minor,
        "difference_minor": sub.difference_minor,
        "reason": sub.reason,
        "consent": sub.consent,
        "status": sub.status,
        "requested_at": sub.requested_at,
        "decided_at": sub.decided_at,
    }


def pending_at_store(session: Session, store_id: int) -> list[dict]:
    """List a store's substitutions waiting for the patient's answer, oldest first (console)."""
    given = Product.__table__.alias("given")
    rows = session.execute(
        select(
            OrderSubstitution,
            Product.name.label("from_name"),
            given.c.name.label("to_name"),
        )
        .join(Order, Order.id == OrderSubstitution.order_id)
        .join(Product, Product.id == OrderSubstitution.from_product_id)
        .join(given, given.c.id == OrderSubstitution.to_product_id)
        .where(Order.store_id == store_id, OrderSubstitution.status == PENDING)
        .order_by(OrderSubstitution.requested_at, OrderSubstitution.id)
    ).all()
    return [
        {
            "order_id": sub.order_id,
            "short_id": str(sub.order_id)[:8],
            "from_name": from_name,
            "to_name": to_name,
            "from_quantity": sub.from_quantity,
            "to_quantity": sub.to_quantity,
            "reason": sub.reason.replace("_", " "),
            "difference_minor": sub.difference_minor,
            "requested_at": sub.requested_at,
        }
        for sub, from_name, to_name in rows
    ]
