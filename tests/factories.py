"""Plain factory functions: make_x(session, **overrides) -> the row, flushed.

The one place tests build users, stores, products, lots and orders. Defaults are documented on
each function; a test that relies on a value passes it explicitly. Every date is a store's local
day from `o2o.clock`, so the suite passes at any hour.
"""

import functools
import itertools
import json
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.geo import area_element, parse_area, point_element
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus
from o2o.payments import apps as payment_apps
from o2o.payments import intake
from o2o.payments.models import Payment, PaymentApp
from o2o.security import create_access_token, hash_password, new_code
from o2o.users import service as users_service
from o2o.users.models import Role, User
from stores import allocation
from stores.models import FleetLoad, Lot, Product, Store
from stores.schemas import gtin_check_digit

PASSWORD = "correct-horse-battery"
# Where test stores and patients are unless a test says otherwise, and the stores' time zone.
SHANGHAI = (31.2304, 121.4737)
STORE_ZONE = "Asia/Shanghai"
M_PER_DEG_LAT = 111_320.0
_seq = itertools.count(1)


@functools.cache
def _password_hash(password: str) -> str:
    # argon2 is slow on purpose; tests need many users with a handful of passwords.
    return hash_password(password)


def make_user(
    session: Session,
    *,
    role: Role = Role.PATIENT,
    email: str | None = None,
    password: str = PASSWORD,
    name: str | None = None,
    store_ids: list[int] | None = None,
) -> User:
    """A user (linked to stores when staff), flushed; each password is hashed once per run."""
    n = next(_seq)
    user = User(
        email=email or f"{role.value}{n}@test.example.com",
        name=name or f"{role.value.title()} {n}",
        password_hash=_password_hash(password),
        role=role,
    )
    session.add(user)
    session.flush()
    if store_ids:
        users_service.link_stores(session, user, store_ids)
    return user


def offset(
    metres_north: float = 0.0, metres_east: float = 0.0, *, origin: tuple[float, float] = SHANGHAI
) -> tuple[float, float]:
    """Return (lat, lon) this many metres north/east of origin (good to a few metres here)."""
    lat = origin[0] + metres_north / M_PER_DEG_LAT
    lon = origin[1] + metres_east / (M_PER_DEG_LAT * math.cos(math.radians(origin[0])))
    return lat, lon


def square_zone(center: tuple[float, float], half_side_m: float) -> dict:
    """A GeoJSON square `half_side_m` metres each way around a (lat, lon) point."""
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
    at: tuple[float, float] = SHANGHAI,
    zone_half_side_m: float | None = None,
    zone: dict | None = None,
    **overrides: Any,
) -> Store:
    """A store at `at` (lat, lon), flushed.

    Defaults: in Asia/Shanghai (STORE_ZONE), always open, pickup; delivery too when it has a
    zone (a square `zone_half_side_m` around the store, or the GeoJSON polygon `zone`); prep 10
    minutes, delivery fee 500 CNY minor units, minimum shelf life 30 days, 18 km/h couriers with a
    1.35 detour factor. Any column can be overridden by name.
    """
    n = next(_seq)
    if zone is None and zone_half_side_m:
        zone = square_zone(at, zone_half_side_m)
    values: dict[str, Any] = dict(
        name=f"Pharmacy {n}",
        address=f"{n} Test Road",
        location=point_element(*at),
        timezone=STORE_ZONE,
        opening_hours=None,
        offers_pickup=True,
        offers_delivery=zone is not None,
        delivery_zone=area_element(parse_area(zone)) if zone is not None else None,
        prep_minutes=10,
        delivery_fee_minor=500,
        currency="CNY",
        min_shelf_life_days=30,
        courier_speed_kmh=18,
        detour_factor=1.35,
    )
    values.update(overrides)
    store = Store(**values)
    session.add(store)
    session.flush()
    return store


def gtin(n: int | None = None, prefix: str = "694") -> str:
    """A GTIN-13 with a valid check digit, unique per n (by default, per call)."""
    body = f"{prefix}{next(_seq) if n is None else n:09d}"
    return body + str(gtin_check_digit(body))


def make_product(session: Session, **overrides: Any) -> Product:
    """A product, flushed: over the counter, not controlled, no per-order limit, 500 mg tablets
    in packs of 20, with a unique valid GTIN. Any column can be overridden by name."""
    n = next(_seq)
    values: dict[str, Any] = dict(
        name=f"Product {n}",
        generic_name=f"generic {n}",
        strength="500 mg",
        dosage_form="tablet",
        pack_size=20,
        gtin=gtin(),
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
    reserved: int = 0,
    price_minor: int = 1850,
    **overrides: Any,
) -> Lot:
    """A lot of `product` at `store`, flushed, expiring `days` after the store's local today
    (the day the store counts shelf life from). Any column can be overridden by name."""
    values: dict[str, Any] = dict(
        store_id=store.id,
        product_id=product.id,
        lot_number=f"L{next(_seq)}",
        expiry_date=clock.today(store.timezone) + timedelta(days=days),
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


def make_fleet_load(
    session: Session,
    store: Store,
    *,
    wait_minutes: float,
    at: datetime,
    open_jobs: int = 8,
    couriers: int = 2,
) -> FleetLoad:
    """The fleet's estimate around `store`, as dispatch writes it each minute: a courier wait of
    `wait_minutes` computed `at`; flushed."""
    row = FleetLoad(
        store_id=store.id,
        courier_wait_minutes=wait_minutes,
        open_jobs=open_jobs,
        couriers=couriers,
        computed_at=at,
    )
    session.add(row)
    session.flush()
    return row


def make_order(
    session: Session,
    patient: User,
    store: Store,
    lines: list[tuple[Lot, int]],
    *,
    fulfillment: str = "pickup",
    rx: bool = False,
    now: datetime | None = None,
) -> Order:
    """An order reserved at `store` without routing (for tests of what happens after placing),
    flushed: released at `now` (default: the clock's now), or awaiting its prescription with a
    24-hour hold when `rx`; a delivery goes 800 m north of SHANGHAI with a two-hour SLA."""
    now = now or clock.now()
    reserved = allocation.reserve_lines(
        session,
        store.id,
        [allocation.LineRequest(lot.product_id, qty) for lot, qty in lines],
        min_expiry=clock.today(store.timezone, at=now),
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
        patient_location=point_element(*SHANGHAI),
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
    lifecycle.create(session, order, actor_id=patient.id, at=now)
    return order


def token_for(user: User, minutes: int | None = None) -> str:
    return create_access_token(str(user.id), role=user.role.value, minutes=minutes)


def auth(user: User) -> dict[str, str]:
    """Authorization header for a user."""
    return {"Authorization": f"Bearer {token_for(user)}"}


# Payments: the suite pays as a payment app does, with signed events -----------------------------

TEST_PAYMENT_APP = "Test payment app"


def payment_app(session: Session) -> tuple[PaymentApp, str]:
    """The test payment app and its secret, registered on first use (online orders need one)."""
    app = session.scalar(select(PaymentApp).where(PaymentApp.name == TEST_PAYMENT_APP))
    if app is None:
        return payment_apps.register_app(
            session, name=TEST_PAYMENT_APP, webhook_url="https://payments.example.test/hooks"
        )
    return app, app.secret


def payment_event(
    session: Session,
    payment_id: uuid.UUID | str,
    type_: str = "captured",
    *,
    amount_minor: int | None = None,
    currency: str | None = None,
    event_id: str | None = None,
    refund_id: uuid.UUID | str | None = None,
    secret: str | None = None,
    sent_at: datetime | None = None,
    app_id: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of an event as the payment app signs it; amount and currency default to
    the payment's, the timestamp to the clock's now."""
    payment = session.get(Payment, uuid.UUID(str(payment_id)))
    app, app_secret = payment_app(session)
    body = {
        "event_id": event_id or f"evt-{uuid.uuid4()}",
        "type": type_,
        "payment_id": str(payment_id),
        "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
        "currency": currency or payment.currency,
        "psp_reference": f"psp-{uuid.uuid4().hex[:12]}",
    }
    if refund_id is not None:
        body["refund_id"] = str(refund_id)
    raw = json.dumps(body).encode()
    timestamp = int((sent_at or clock.now()).timestamp())
    headers = {
        payment_apps.APP_HEADER: str(app_id or app.id),
        payment_apps.TIMESTAMP_HEADER: str(timestamp),
        payment_apps.SIGNATURE_HEADER: payment_apps.signature_for(
            secret or app_secret, timestamp, raw
        ),
        "Content-Type": "application/json",
    }
    return headers, raw


def pay(session: Session, order: Order | uuid.UUID | str) -> Order:
    """Capture an order's payment in full as the payment app would (a signed `captured` event
    through the platform's intake); return the order, refreshed."""
    order_id = order.id if isinstance(order, Order) else uuid.UUID(str(order))
    payment = session.scalar(select(Payment).where(Payment.order_id == order_id))
    headers, raw = payment_event(session, payment.id)
    intake.receive(
        session,
        payment_apps.SignedHeaders(
            headers[payment_apps.APP_HEADER],
            headers[payment_apps.TIMESTAMP_HEADER],
            headers[payment_apps.SIGNATURE_HEADER],
        ),
        raw,
    )
    session.flush()
    found = session.get(Order, order_id)
    session.refresh(found)
    return found


def pay_through(client, session: Session, order_id: uuid.UUID | str):
    """Capture an order's payment by POSTing the signed event to the API; return the response."""
    payment = session.scalar(select(Payment).where(Payment.order_id == uuid.UUID(str(order_id))))
    headers, raw = payment_event(session, payment.id)
    return client.post("/api/v1/payments/events", content=raw, headers=headers)
