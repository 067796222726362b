"""Stores, products, lots and orders for the orders tests (plain functions, flushed rows)."""

import itertools
import math
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o.geo import area_element, parse_area, point_element
from o2o.orders.models import Order
from stores.models import Lot, Product, Store

_seq = itertools.count(1)

# A quiet street grid: the patient stands at HOME; stores are placed by offsets in metres.
HOME = (31.2304, 121.4737)
M_PER_DEG_LAT = 111_320.0


def offset(metres_north: float = 0.0, metres_east: float = 0.0) -> tuple[float, float]:
    """Return a point this many metres north/east of HOME (good to a few metres here)."""
    lat = HOME[0] + metres_north / M_PER_DEG_LAT
    lon = HOME[1] + metres_east / (M_PER_DEG_LAT * math.cos(math.radians(HOME[0])))
    return lat, lon


def square_zone(center: tuple[float, float], half_side_m: float) -> dict:
    """A GeoJSON square around a point."""
    lat, lon = center
    dlat = half_side_m / M_PER_DEG_LAT
    dlon = half_side_m / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    ring = [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def make_store(
    session: Session,
    *,
    at: tuple[float, float] | None = None,
    zone_half_side_m: float | None = None,
    delivery: bool | None = None,
    **overrides,
) -> Store:
    n = next(_seq)
    at = at or offset(500, 0)
    values = dict(
        name=f"Pharmacy {n}",
        address=f"{n} Test Road",
        location=point_element(*at),
        timezone="Asia/Shanghai",
        opening_hours=None,
        offers_pickup=True,
        offers_delivery=bool(zone_half_side_m) if delivery is None else delivery,
        prep_minutes=10,
        delivery_fee_minor=500,
        currency="CNY",
        min_shelf_life_days=30,
        courier_speed_kmh=18,
        detour_factor=1.35,
    )
    if zone_half_side_m:
        values["delivery_zone"] = area_element(parse_area(square_zone(at, zone_half_side_m)))
    values.update(overrides)
    store = Store(**values)
    session.add(store)
    session.flush()
    return store


def make_product(session: Session, **overrides) -> Product:
    n = next(_seq)
    values = dict(
        name=f"Product {n}",
        generic_name=f"generic {n}",
        strength="500 mg",
        dosage_form="tablet",
        pack_size=20,
        gtin=f"{9_000_000_000_000 + n:014d}",
        rx_only=False,
        controlled=False,
        max_per_order=None,
    )
    values.update(overrides)
    product = Product(**values)
    session.add(product)
    session.flush()
    return product


def make_lot(
    session: Session,
    store: Store,
    product: Product,
    *,
    on_hand: int = 10,
    days: int = 365,
    price_minor: int = 1850,
    reserved: int = 0,
    **overrides,
) -> Lot:
    values = dict(
        store_id=store.id,
        product_id=product.id,
        lot_number=f"L{next(_seq)}",
        expiry_date=date.today() + timedelta(days=days),
        on_hand=on_hand,
        reserved=reserved,
        price_minor=price_minor,
        currency="CNY",
    )
    values.update(overrides)
    lot = Lot(**values)
    session.add(lot)
    session.flush()
    return lot


def order_body(
    items: list[tuple[int, int]],
    *,
    fulfillment: str = "pickup",
    at: tuple[float, float] = HOME,
    address_at: tuple[float, float] | None = None,
    store_id: int | None = None,
) -> dict:
    body: dict = {
        "items": [{"product_id": p, "quantity": q} for p, q in items],
        "location": {"lat": at[0], "lon": at[1]},
        "fulfillment": fulfillment,
    }
    if address_at is not None:
        body["delivery_address"] = {
            "location": {"lat": address_at[0], "lon": address_at[1]},
            "text": "Room 501, 8 Example Rd",
        }
    if store_id is not None:
        body["store_id"] = store_id
    return body


def stock(session: Session, lot: Lot) -> tuple[int, int]:
    """(on_hand, reserved) as committed/flushed now."""
    session.expire(lot)
    return lot.on_hand, lot.reserved


def order_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Order))


def make_order(
    session: Session,
    patient,
    store: Store,
    lines: list[tuple[Lot, int]],
    *,
    fulfillment: str = "pickup",
    rx: bool = False,
    now=None,
) -> Order:
    """An order reserved at `store` without routing (for tests of what happens after placing)."""
    import uuid
    from datetime import UTC, datetime

    from o2o.orders import lifecycle
    from o2o.orders.models import Fulfillment, LotAllocation, OrderLine, OrderStatus
    from o2o.security import new_code
    from stores import allocation

    now = now or datetime.now(UTC)
    reserved = allocation.reserve_lines(
        session,
        store.id,
        [allocation.LineRequest(lot.product_id, qty) for lot, qty in lines],
        min_expiry=date.today(),
    )
    delivery = fulfillment == "delivery"
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        store_id=store.id,
        status=OrderStatus.AWAITING_PRESCRIPTION if rx else OrderStatus.RELEASED,
        fulfillment=Fulfillment(fulfillment),
        requested_fulfillment=fulfillment,
        routing_reason="Test routing.",
        patient_location=point_element(*HOME),
        delivery_location=point_element(*offset(800, 0)) if delivery else None,
        delivery_address_text="Room 501" if delivery else None,
        currency="CNY",
        subtotal_minor=sum(lot.price_minor * qty for lot, qty in lines),
        delivery_fee_minor=500 if delivery else 0,
        compensation_minor=0,
        pickup_code=new_code(),
        delivery_code=new_code(),
        pickup_code_failures=0,
        created_at=now,
        released_at=None if rx else now,
        hold_expires_at=now + timedelta(hours=24) if rx else None,
        sla_deadline=now + timedelta(hours=2) if delivery and not rx else None,
    )
    for lot, qty in lines:
        order.lines.append(
            OrderLine(
                product_id=lot.product_id,
                quantity=qty,
                price_minor=lot.price_minor,
                rx_only=rx,
                allocations=[
                    LotAllocation(lot_id=a.lot_id, quantity=a.quantity)
                    for a in reserved[lot.product_id]
                ],
            )
        )
    session.add(order)
    session.flush()
    lifecycle.record_creation(session, order, actor_id=patient.id, at=now)
    session.flush()
    return order
