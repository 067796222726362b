"""Checkout for a community pickup point: the point's store fulfils the order, which travels in
the store's next run the order can make; the run's arrival at the point is the order's deadline.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from dispatch import routing, runs
from o2o.errors import InvalidInput
from o2o.geo import point_element, to_latlon
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import Fulfillment, Order
from stores import pickup_points
from stores.models import Store
from stores.pickup_points import PickupPoint


def route(
    session: Session, body: OrderIn, *, now: datetime
) -> tuple[routing.Decision, PickupPoint]:
    """Decide the store and say, in the patient's words, when the order reaches the point."""
    point = session.get(PickupPoint, body.pickup_point_id)
    store = session.get(Store, point.store_id) if point is not None else None
    if point is None or not point.is_active or store is None or not store.is_active:
        raise InvalidInput(
            "The pickup point you chose does not exist.",
            code="unknown_pickup_point",
            details={"pickup_point_id": body.pickup_point_id},
        )
    slot = pickup_points.run_for_new_order(session, point, now=now)
    arrives = slot.arrives_at.astimezone(ZoneInfo(store.timezone))
    reason = (
        f"{store.name} sends it in its run to the pickup point {point.name} ({point.address}), "
        f"arriving {arrives:%a %d %b %H:%M}; collect it there with your pickup code."
    )
    decision = routing.Decision(
        fulfillment=Fulfillment.PICKUP_POINT.value,
        store_id=store.id,
        store_name=store.name,
        reason=reason,
    )
    return decision, point


def address(order: Order, point: PickupPoint) -> None:
    """Address a new order to the point (its drop-off is the point)."""
    at = to_latlon(point.location)

    order.pickup_point_id = point.id
    order.delivery_location = point_element(at["lat"], at["lon"])
    order.delivery_address_text = f"{point.name}, {point.address}"


def book(session: Session, order: Order, point: PickupPoint, *, now: datetime) -> None:
    """Book the placed order on its run (its deadline is the run's arrival)."""
    runs.book(session, order, point, now=now)
