"""Placing an order: validate the cart, check the hoarding caps, find the stores, route (pickup or
delivery), reserve every line FEFO in one transaction, record the order with its first timeline
entry, and open its payment (online: stock held until the payment deadline)."""

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch import routing
from o2o import clock
from o2o.config import get_settings
from o2o.errors import InvalidInput
from o2o.geo import point_element, to_latlon
from o2o.i18n import gettext
from o2o.members import service as members_service
from o2o.members.models import DeliveryWaiver
from o2o.order_flow import equivalent_lines, limits, pickup_point_checkout, promise
from o2o.order_flow.schemas import OrderIn
from o2o.orders import lifecycle, states
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus
from o2o.payments import service as payments_service
from o2o.payments.models import Payment, PaymentMethod
from o2o.security import new_code
from o2o.users.models import User
from stores import allocation, search, substitutes
from stores import service as stores_service
from stores.cart import CartLine
from stores.models import Product, Store

# How many stores routing looks at: enough to find a complete, open one that delivers in time
# without scanning the city.
SEARCH_LIMIT = 10
# A search this wide around the chosen store finds that store alone.
CHOSEN_STORE_RADIUS_M = 1.0


def _option(match, *, delivery: bool) -> routing.StoreOption:
    return routing.StoreOption(
        store_id=match.store_id,
        name=match.name,
        distance_m=float(match.distance_m),
        complete=bool(match.complete),
        is_open=bool(match.is_open),
        offers_pickup=bool(match.offers_pickup),
        offers_delivery=bool(match.offers_delivery),
        in_zone=bool(match.can_deliver) if delivery else False,
        eta_minutes=match.eta_minutes if delivery else None,
        opens_at=match.opens_at,
        courier_wait_minutes=match.courier_wait_minutes if delivery else 0,
        missing=tuple(
            allocation.Shortage(int(m["product_id"]), int(m["quantity_missing"]))
            for m in (match.missing or ())
        ),
    )


def _localised(match: search.StoreMatch) -> datetime | None:
    """Return when a closed store opens, in the store's own time (what the patient reads)."""
    if match.opens_at is None:
        return None
    try:
        return match.opens_at.astimezone(ZoneInfo(match.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return match.opens_at


def _options(
    session: Session,
    *,
    lat: float,
    lon: float,
    lines: Sequence,
    delivery_point: tuple[float, float] | None,
    chosen: Store | None,
    now: datetime,
    wishes: Mapping[int, str | None] | None = None,
    found: dict[int, list[dict]] | None = None,
    read: dict[int, search.StoreMatch] | None = None,
) -> list[routing.StoreOption]:
    """Return the stores routing chooses from, as seen from (lat, lon); with `wishes`, a store
    covering lines with equivalents counts as complete, its stand-ins noted in `found`; each
    store's row as the search read it is kept in `read` (by store id). Stores holding part of
    the cart come only when none holds all of it: routing chooses among complete stores, and
    reads what partial ones miss only to say why no store can take the order."""
    if chosen is None:
        matches = substitutes.search_stores(
            session,
            wishes=wishes,
            lat=lat,
            lon=lon,
            lines=list(lines),
            fulfillment="any",
            limit=SEARCH_LIMIT,
            partial_beside_complete=False,
            delivery_point=delivery_point,
            now=now,
        )
    else:
        # The chosen store may be far down the list from the patient: look at it alone, from
        # where it stands, and measure the distance from the patient separately.
        at = to_latlon(chosen.location)
        matches = [
            m
            for m in substitutes.search_stores(
                session,
                wishes=wishes,
                lat=at["lat"],
                lon=at["lon"],
                lines=list(lines),
                fulfillment="any",
                limit=SEARCH_LIMIT,
                partial_beside_complete=False,
                radius_m=CHOSEN_STORE_RADIUS_M,
                delivery_point=delivery_point or (lat, lon),
                now=now,
            )
            if m.store_id == chosen.id
        ]
        for m in matches:
            m.distance_m = session.scalar(
                text(
                    "SELECT ST_Distance(location, "
                    "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography) "
                    "FROM stores WHERE id = :id"
                ),
                {"lat": lat, "lon": lon, "id": chosen.id},
            )
    options = []
    for m in matches:
        if found is not None and m.substitutes:
            found[m.store_id] = m.substitutes
        if read is not None:
            read[m.store_id] = m
        option = _option(m, delivery=delivery_point is not None)
        if option.opens_at is not None:
            option = replace(option, opens_at=_localised(m))
        options.append(option)
    return options


def route(
    session: Session, body: OrderIn, lines: Sequence, *, now: datetime, options=_options
) -> routing.Decision:
    """Decide pickup or delivery and the store for this cart (409 with the reason if neither)."""
    settings = get_settings()
    chosen = None
    if body.store_id is not None:
        chosen = session.get(Store, body.store_id)
        if chosen is None or not chosen.is_active:
            raise InvalidInput(
                gettext("The pharmacy you chose does not exist."),
                code="unknown_store",
                details={"store_id": body.store_id},
            )
    delivery_options = None
    if body.fulfillment != "pickup" and body.delivery_address is not None:
        point = body.delivery_address.location
        delivery_options = options(
            session,
            lat=point.lat,
            lon=point.lon,
            lines=lines,
            delivery_point=(point.lat, point.lon),
            chosen=chosen,
            now=now,
        )
    pickup_options: list[routing.StoreOption] = []
    # Pickup stores are searched from the patient, and only when delivery is not settled already.
    delivery_settled = (
        delivery_options is not None
        and routing.best_delivery(delivery_options, settings.sla_minutes)[0] is not None
    )
    if not delivery_settled:
        pickup_options = options(
            session,
            lat=body.location.lat,
            lon=body.location.lon,
            lines=lines,
            delivery_point=None,
            chosen=chosen,
            now=now,
        )
    return routing.decide(
        body.fulfillment,
        pickup_options=pickup_options,
        delivery_options=delivery_options,
        sla_minutes=settings.sla_minutes,
        cart=[(line.product_id, line.quantity) for line in lines],
        store_chosen=body.store_id is not None,
    )


def _unit_price(allocations: Sequence[allocation.Allocation], quantity: int) -> int:
    """Return the unit price over the lots allocated, rounded half up to a minor unit."""
    total = sum(a.quantity * a.price_minor for a in allocations)
    return (2 * total + quantity) // (2 * quantity)


@dataclass(frozen=True)
class OrderStore:
    """What placing an order reads of its store: the row routing's search read of it when the
    store was chosen from a search (no second read of the store), else the `Store`."""

    id: int
    name: str
    currency: str
    delivery_fee_minor: int
    timezone: str
    min_shelf_life_days: int

    @classmethod
    def of(cls, store: "Store | search.StoreMatch") -> "OrderStore":
        return cls(
            id=store.store_id if isinstance(store, search.StoreMatch) else store.id,
            name=store.name,
            currency=store.currency,
            delivery_fee_minor=store.delivery_fee_minor,
            timezone=store.timezone,
            min_shelf_life_days=store.min_shelf_life_days,
        )


@dataclass(frozen=True)
class Placed:
    """A new order with what its view would otherwise read back: its store, its payment and its
    waiver."""

    order: Order
    store: OrderStore
    payment: Payment
    waiver: DeliveryWaiver | None


def place_order(session: Session, patient: User, body: OrderIn, **options: Any) -> Order:
    """Place an order: route it, reserve every line atomically, and record it (written, not committed).
    `options` are `place`'s."""
    return place(session, patient, body, **options).order


def place(
    session: Session,
    patient: User,
    body: OrderIn,
    *,
    now: datetime | None = None,
    reserve: allocation.Reserve = allocation.reserve_lines,
) -> Placed:
    """Place an order as `place_order` does, and return it with its payment and waiver.

    `reserve` takes the stock; an `allocation.StockLast` only plans it, for the caller to take
    with its commit (`StockLast.take_and_commit`)."""
    now = now or clock.now()
    settings = get_settings()
    cart = body.merged_items()
    lines = [CartLine(product_id, quantity) for product_id, quantity in cart]
    products: dict[int, Product] = limits.check_cart(session, patient.id, cart)

    wishes = body.substitution_wishes()
    # Stores that cover lines with equivalents, and which (store id -> stand-ins).
    found: dict[int, list[dict]] = {}
    # Every store the routing searches read, as they read it (store id -> row).
    read: dict[int, search.StoreMatch] = {}
    options = functools.partial(_options, wishes=wishes, found=found, read=read)
    slot = None
    point = None
    try:
        if body.delivery_slot is not None:
            decision, slot = promise.slot_route(session, body, lines, now=now, options=options)
        elif body.fulfillment == "pickup_point":
            decision, point = pickup_point_checkout.route(session, body, now=now)
        else:
            try:
                decision = route(session, body, lines, now=now, options=options)
            except routing.DeliveryUnavailable as exc:
                raise promise.with_earliest_slot(
                    session, exc, body, lines, now=now, options=options
                ) from None
        # The chosen store as its search read it; a pickup point's store was not searched.
        store = OrderStore.of(read.get(decision.store_id) or session.get(Store, decision.store_id))
        stand_ins = {c["for_product_id"]: c for c in found.get(store.id, [])}
        given = equivalent_lines.given(cart, stand_ins)
        reserved = reserve(
            session,
            store.id,
            [allocation.LineRequest(line.product_id, line.quantity) for line in given],
            min_expiry=stores_service.min_sellable_expiry(store, now),
        )
    except allocation.InsufficientStock as exc:
        raise exc.naming({pid: products[pid].name for pid in products}) from None
    products.update(equivalent_lines.products_of(session, given, products))
    allowed = substitutes.allowed_products(products, wishes)

    is_rx = any(products[line.product_id].rx_only for line in given)
    online = body.payment_method == PaymentMethod.ONLINE.value
    delivery = decision.fulfillment == Fulfillment.DELIVERY.value
    address = body.delivery_address if delivery else None
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        store_id=store.id,
        status=(
            OrderStatus.AWAITING_PAYMENT
            if online
            else states.after_payment(is_rx)  # paid at the counter: goes on at once
        ),
        fulfillment=Fulfillment(decision.fulfillment),
        requested_fulfillment=body.fulfillment,
        routing_reason=decision.reason,
        patient_location=point_element(body.location.lat, body.location.lon),
        delivery_location=(
            point_element(address.location.lat, address.location.lon) if address else None
        ),
        delivery_address_text=address.text if address else None,
        currency=store.currency,
        subtotal_minor=0,
        delivery_fee_minor=store.delivery_fee_minor if delivery else 0,
        compensation_minor=0,
        pickup_code=new_code(),
        delivery_code=new_code(),
        pickup_code_failures=0,
        created_at=now,
        delivery_slot_start=slot.start if slot else None,
        delivery_slot_end=slot.end if slot else None,
    )
    if online:
        # Stock is held for the payment; the capture moves the order on (`lifecycle.mark_paid`).
        order.hold_expires_at = states.payment_hold_expires(now, settings.payment_minutes)
    elif is_rx:
        # Stock is held while a doctor and the store's pharmacist act; released when they do.
        order.hold_expires_at = now + timedelta(hours=settings.rx_wait_hours)
    else:
        order.released_at = now
        if slot is not None:
            order.sla_deadline = slot.end
        elif delivery:
            order.sla_deadline = states.sla_deadline(now, settings.sla_minutes)
    if point is not None:
        pickup_point_checkout.address(order, point)
    subtotal = 0
    for line in given:
        chosen = reserved[line.product_id]
        price = _unit_price(chosen, line.quantity)
        subtotal += price * line.quantity
        order.lines.append(
            OrderLine(
                product_id=line.product_id,
                quantity=line.quantity,
                price_minor=price,
                rx_only=products[line.product_id].rx_only,
                allocations=[LotAllocation(lot_id=a.lot_id, quantity=a.quantity) for a in chosen],
                requested_product_id=line.requested_product_id,
                substitution="allowed" if line.asked_id in allowed else "not_allowed",
                substitution_reason="out_of_stock" if line.requested_product_id else None,
            )
        )
    order.subtotal_minor = subtotal
    # Written now, before the rows that point at it: its payment, a waiver, a pickup-point parcel.
    lifecycle.create(session, order, actor_id=patient.id, at=now)
    if point is not None:
        pickup_point_checkout.book(session, order, point, now=now)
    # The member's level may waive the delivery fee: before the payment is opened for the total.
    waiver = members_service.apply_benefits(session, order, now=now)
    payment = payments_service.open_payment(
        session,
        order,
        method=PaymentMethod(body.payment_method),
        due_at=order.hold_expires_at if online else None,
    )
    session.flush()
    return Placed(order, store, payment, waiver)
