"""Completed orders for the members' and analytics tests, through the order record's lifecycle
(so `order_completed` reaches its real subscribers)."""

from datetime import datetime

from sqlalchemy.orm import Session

from o2o import clock
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import User
from stores.models import Lot, Store
from tests.factories import make_order


def completed_order(
    session: Session,
    patient: User,
    store: Store,
    lines: list[tuple[Lot, int]],
    *,
    at: datetime | None = None,
    fulfillment: str = "pickup",
) -> Order:
    """An order placed, prepared, made ready and handed over at `at` (default: now)."""
    at = at or clock.now()
    order = make_order(session, patient, store, lines, fulfillment=fulfillment, now=at)
    order = lifecycle.lock_order(session, order.id)
    lifecycle.transition(session, order, OrderStatus.PREPARING, at=at)
    lifecycle.transition(session, order, OrderStatus.READY, at=at)
    if fulfillment == "delivery":
        lifecycle.transition(session, order, OrderStatus.OUT_FOR_DELIVERY, at=at)
    lifecycle.complete(session, order, at=at)
    return order
