"""Apply state changes to orders: check the transition, stamp times, append the timeline, and
write the outbox event, all in the caller's transaction on a row locked FOR UPDATE."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from o2o import clock, outbox
from o2o.config import get_settings
from o2o.errors import NotFound
from o2o.geo import to_latlon
from o2o.i18n import gettext as _
from o2o.orders import events, states
from o2o.orders.models import Fulfillment, Order, OrderEvent, OrderStatus
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


def record_creation(session: Session, order: Order, *, actor_id: int, at: datetime) -> None:
    """Append the first timeline entry (the order's initial status); the order's timeline is
    that entry alone, known without reading it back."""
    event = OrderEvent(
        order_id=order.id,
        from_status=None,
        to_status=order.status,
        at=at,
        actor_id=actor_id,
        reason=order.routing_reason,
    )
    session.add(event)
    set_committed_value(order, "events", [event])
    outbox.emit(
        session,
        "order.created",
        "order",
        order.id,
        {
            "order_id": str(order.id),
            "store_id": order.store_id,
            "status": order.status.value,
            "at": at.isoformat(),
        },
    )


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
