"""Apply state changes to orders: check the transition, stamp times, append the timeline, and
write the outbox event, all in the caller's transaction on a row locked FOR UPDATE."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from o2o import clock, db, outbox
from o2o.config import get_settings
from o2o.errors import NotFound
from o2o.geo import to_latlon
from o2o.i18n import gettext as _
from o2o.orders import events, states
from o2o.orders.models import Fulfillment, Order, OrderEvent, OrderLine, OrderStatus
from stores import allocation, fleet_load, slots

S = OrderStatus


def lock_order(session: Session, order_id: uuid.UUID) -> Order:
    """Load an order locked FOR UPDATE (transitions on one order are serialised)."""
    order = session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if order is None:
        raise NotFound(_("No such order."), code="order_not_found")
    return order


def transition(
    session: Session,
    order: Order,
    to: OrderStatus,
    *,
    actor_id: int | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> OrderEvent:
    """Move a locked order to `to` (409 if illegal), recording the event and its outbox message.

    Stock effects (returning a reservation, committing it) are not made here: use `cancel` and
    `complete` below, which also move the stock.
    """
    states.check(order.status, to, order.fulfillment)
    at = at or clock.now()
    previous = order.status
    order.status = to
    if to is S.RELEASED:
        order.released_at = at
        order.hold_expires_at = None
        if order.delivery_slot_end is not None:
            order.sla_deadline = order.delivery_slot_end  # a scheduled delivery: the slot's end
            start = slots.preparation_start(
                session,
                order.store_id,
                order.delivery_slot_start,
                to_latlon(order.delivery_location),
            )
            order.prepare_from = at if start is None else max(at, start)
        elif order.fulfillment is Fulfillment.DELIVERY:
            order.sla_deadline = states.sla_deadline(at, get_settings().sla_minutes)
            hold = fleet_load.preparation_hold(session, order.store_id, now=at)
            order.prepare_from = at + timedelta(minutes=hold)
    elif to is S.READY:
        order.ready_at = at
    elif to is S.COMPLETED:
        order.completed_at = at
        order.hold_expires_at = None
    elif to is S.CANCELLED:
        order.cancelled_at = at
        order.cancel_reason = reason
        order.hold_expires_at = None
    event = OrderEvent(
        order_id=order.id,
        from_status=previous,
        to_status=to,
        at=at,
        actor_id=actor_id,
        reason=reason,
    )
    session.add(event)
    outbox.emit(
        session,
        "order.status_changed",
        "order",
        order.id,
        {
            "order_id": str(order.id),
            "store_id": order.store_id,
            "patient_id": order.patient_id,
            "from": previous.value,
            "to": to.value,
            "at": at.isoformat(),
            "reason": reason,
        },
    )
    session.flush()
    session.expire(order, ["events"])
    return event


def mark_paid(session: Session, order: Order, *, at: datetime | None = None) -> OrderEvent:
    """Move a locked unpaid order on once its payment is captured: released, or waiting for its
    prescription (requested only now) with the prescription hold starting at the capture."""
    at = at or clock.now()
    to = states.after_payment(order.is_rx)
    event = transition(session, order, to, reason="Payment received.", at=at)
    if to is S.AWAITING_PRESCRIPTION:
        order.hold_expires_at = states.prescription_hold_expires(at, get_settings().rx_wait_hours)
        session.flush()
    return event


# What the table would fill in itself, set on a new order that leaves it unset: the INSERT names
# every column, and the order then knows every column of its row.
_NEW_ORDER_DEFAULTS = {"delivery_fee_minor": 0, "compensation_minor": 0, "pickup_code_failures": 0}
_LINE_OWN = ("id", "order_id")  # the sequence's and the order's
_ORDER_COLUMNS, _ORDER_VALUES, _ORDER_PARAMS = db.insert_values(Order.__table__, "order_")
_LINE_COLUMNS, _LINE_ARRAYS = db.insert_arrays(OrderLine.__table__, "line_", skip=_LINE_OWN)
# The order, its lines (one per product), their lots, its first timeline entry and its
# `order.created` event (as `outbox.emit` records one), in one statement. A line's id is read
# back by its product.
_CREATE = text(
    f"""
    WITH new_order AS (
        INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({_ORDER_VALUES})
    ), new_lines AS (
        INSERT INTO order_lines (order_id, {_LINE_COLUMNS})
        SELECT :order_id, {_LINE_COLUMNS}
        FROM unnest({_LINE_ARRAYS}) WITH ORDINALITY AS l({_LINE_COLUMNS}, n)
        ORDER BY l.n
        RETURNING id, product_id
    ), new_allocations AS (
        INSERT INTO lot_allocations (order_line_id, lot_id, quantity)
        SELECT new_lines.id, a.lot_id, a.quantity
        FROM unnest(CAST(:allocation_product_ids AS integer[]),
                    CAST(:allocation_lot_ids AS bigint[]),
                    CAST(:allocation_quantities AS integer[])) AS a(product_id, lot_id, quantity)
        JOIN new_lines USING (product_id)
    ), first_event AS (
        INSERT INTO order_events (order_id, from_status, to_status, at, actor_id, reason)
        VALUES (:order_id, NULL, :order_status, :event_at, :event_actor_id, :order_routing_reason)
        RETURNING id
    ), created AS (
        INSERT INTO outbox_events (id, event_type, aggregate_type, aggregate_id, payload)
        VALUES (:event_outbox_id, 'order.created', 'order', CAST(:order_id AS text),
                :event_payload)
    )
    SELECT first_event.id AS event_id, new_lines.product_id, new_lines.id AS line_id
    FROM first_event LEFT JOIN new_lines ON true
    """
).bindparams(*_ORDER_PARAMS, bindparam("event_payload", type_=JSONB))


def create(session: Session, order: Order, *, actor_id: int, at: datetime) -> None:
    """Write a new order (its lines and their lots set on it, a line per product), its first
    timeline entry (its initial status, by `actor_id` at `at`) and its `order.created` event, in
    one statement. The order, its lines, their lots and the entry then belong to the session as
    if loaded (a later change is an UPDATE); the order's timeline is that entry alone."""
    if order.id is None:
        order.id = uuid.uuid4()
    if order.created_at is None:
        order.created_at = at
    for key, value in _NEW_ORDER_DEFAULTS.items():
        if getattr(order, key) is None:
            setattr(order, key, value)
    lines = order.lines
    for line in lines:
        line.order_id = order.id
        if line.substitution is None:
            line.substitution = "not_allowed"  # the column's default
    allocations = [(line, a) for line in lines for a in line.allocations]
    session.flush()  # what the order points at (its split order, a new store in a test) first
    rows = session.execute(
        _CREATE,
        {
            **db.written_values(order, "order_"),
            **db.written_rows(OrderLine.__table__, lines, "line_", skip=_LINE_OWN),
            "allocation_product_ids": [line.product_id for line, _ in allocations],
            "allocation_lot_ids": [a.lot_id for _, a in allocations],
            "allocation_quantities": [a.quantity for _, a in allocations],
            "event_at": at,
            "event_actor_id": actor_id,
            "event_outbox_id": uuid.uuid4(),
            "event_payload": {
                "order_id": str(order.id),
                "store_id": order.store_id,
                "status": order.status.value,
                "at": at.isoformat(),
            },
        },
    ).all()
    line_ids = {row.product_id: row.line_id for row in rows}
    for line in lines:
        line.id = line_ids[line.product_id]
    for line, a in allocations:
        a.order_line_id = line.id
    event = OrderEvent(
        id=rows[0].event_id,
        order_id=order.id,
        from_status=None,
        to_status=order.status,
        at=at,
        actor_id=actor_id,
        reason=order.routing_reason,
    )
    set_committed_value(order, "events", [event])
    db.attach_written(session, order, *lines, *(a for _, a in allocations), event)


def allocations_of(order: Order) -> list[tuple[int, int]]:
    """Return the order's reserved stock as (lot_id, quantity) pairs."""
    return [(a.lot_id, a.quantity) for line in order.lines for a in line.allocations]


def cancel(
    session: Session, order: Order, *, reason: str, actor_id: int | None = None
) -> OrderEvent:
    """Cancel a locked order and give its reserved stock back to the lots (409 if closed);
    the domains above close what they hold for it (`events.order_cancelled`)."""
    event = transition(session, order, S.CANCELLED, actor_id=actor_id, reason=reason)
    allocation.release(session, allocations_of(order))
    events.order_cancelled.send(session, order)
    return event


def complete(
    session: Session, order: Order, *, actor_id: int | None = None, at: datetime | None = None
) -> OrderEvent:
    """Complete a locked order: the goods have left, so reserved units leave on-hand stock;
    the domains above record the hand-over (`events.order_completed`)."""
    event = transition(session, order, S.COMPLETED, actor_id=actor_id, at=at)
    allocation.commit(session, allocations_of(order))
    events.order_completed.send(session, order, actor_id=actor_id)
    return event
