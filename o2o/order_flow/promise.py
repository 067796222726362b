"""The delivery promise at checkout beyond "within the SLA from now": scheduled delivery slots,
and the earliest slot offered when a delivery cannot be promised now.

Checkout calls these; the fleet-aware ETA itself comes from search (`stores.fleet_load`), and
the rule that turns it into pickup or a refusal is `dispatch.routing`.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from dispatch import routing
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import Order
from stores import slots
from stores.models import Store

Options = Callable[..., list[routing.StoreOption]]


def _covering(
    session: Session, body: OrderIn, lines: Sequence, *, now: datetime, options: Options
) -> list[routing.StoreOption]:
    """Stores that have the cart and deliver to the address (open now or not), nearest first."""
    chosen = session.get(Store, body.store_id) if body.store_id is not None else None
    point = body.delivery_address.location
    found = options(
        session,
        lat=point.lat,
        lon=point.lon,
        lines=lines,
        delivery_point=(point.lat, point.lon),
        chosen=chosen,
        now=now,
    )
    return sorted(
        (o for o in found if o.complete and o.offers_delivery and o.in_zone),
        key=lambda o: (o.distance_m, o.store_id),
    )


def slot_route(
    session: Session, body: OrderIn, lines: Sequence, *, now: datetime, options: Options
) -> tuple[routing.Decision, slots.Slot]:
    """Route a scheduled delivery and book its slot at the nearest store that can take it."""
    wanted = body.delivery_slot
    covering = _covering(session, body, lines, now=now, options=options)
    if not covering:
        raise routing.DeliveryUnavailable(
            gettext(
                "We cannot deliver this order: no pharmacy that has everything in your cart delivers to your address."
            ),
            details={"reason": "no pharmacy with your cart delivers to your address"},
        )
    full: Conflict | None = None
    for option in covering:
        store = session.get(Store, option.store_id)
        try:
            slot = slots.book(session, store, wanted.start, wanted.end, now=now)
        except (InvalidInput, slots.SlotFull) as exc:
            if isinstance(exc, slots.SlotFull):
                full = full or exc
            if body.store_id is not None:
                raise
            continue
        local = store_zone_times(store, slot)
        return (
            routing.Decision(
                "delivery",
                store.id,
                store.name,
                f"Delivery from {store.name} between {local}, the slot you chose.",
            ),
            slot,
        )
    if full is not None:
        raise full
    raise InvalidInput(
        gettext(
            "No pharmacy that delivers to you offers that delivery slot; list the slots and pick one."
        ),
        code="invalid_delivery_slot",
        details={"start": wanted.start.isoformat(), "end": wanted.end.isoformat()},
    )


def store_zone_times(store: Store, slot: slots.Slot) -> str:
    """Say a slot in the store's own time, as the patient reads it."""
    zone = ZoneInfo(store.timezone)
    start, end = slot.start.astimezone(zone), slot.end.astimezone(zone)
    return f"{start:%a %H:%M} and {end:%H:%M}"


def with_earliest_slot(
    session: Session,
    refusal: routing.DeliveryUnavailable,
    body: OrderIn,
    lines: Sequence,
    *,
    now: datetime,
    options: Options,
) -> routing.DeliveryUnavailable:
    """Add the earliest delivery slot a covering store offers to a delivery refusal."""
    earliest = None
    if body.delivery_address is not None:
        for option in _covering(session, body, lines, now=now, options=options):
            slot = slots.earliest_slot(session, session.get(Store, option.store_id), now=now)
            if slot is not None and (earliest is None or slot.start < earliest[1].start):
                earliest = (option, slot)
    details = dict(refusal.details or {})
    details["earliest_slot"] = (
        None
        if earliest is None
        else {"store": {"id": earliest[0].store_id, "name": earliest[0].name}}
        | earliest[1].as_dict()
    )
    return routing.DeliveryUnavailable(refusal.message, details=details)


def give_back_slot(session: Session, order: Order, **_: object) -> None:
    """Free the place a cancelled order held in its delivery slot (subscribed to cancels)."""
    if order.delivery_slot_start is not None and order.store_id is not None:
        slots.give_back(session, order.store_id, order.delivery_slot_start)
