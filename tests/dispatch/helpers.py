"""Couriers and delivery orders for the dispatch tests (plain functions, flushed rows); stores
and products come from tests.factories (dispatch stores deliver within DELIVERY_ZONE_M).

Delivery orders are built directly from the models (store, product, lot with reserved units, an
order with lines and allocations), so a test can start from any state in one call.
"""

import itertools
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from dispatch import service
from dispatch.models import Courier, Job
from o2o import clock
from o2o.geo import area_element, parse_area, point_element
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus
from o2o.users.models import Role, User
from stores.models import Lot, Store
from tests import factories
from tests.factories import make_lot, make_product

_seq = itertools.count(1)

DELIVERY_CODE = "482913"
# Half the side of the square delivery zone the dispatch tests give their stores.
DELIVERY_ZONE_M = 8000


def make_courier(
    session: Session,
    *,
    home_store: Store | None = None,
    area: dict | None = None,
    at: tuple[float, float] | None = None,
) -> User:
    """A courier user with a working profile (home store and/or area, optional position)."""
    user = make_user_fast(session, Role.COURIER)
    courier = Courier(
        user_id=user.id,
        home_store_id=home_store.id if home_store else None,
        service_area=area_element(parse_area(area)) if area else None,
        location=point_element(*at) if at else None,
        location_at=clock.now() if at else None,
    )
    session.add(courier)
    session.flush()
    return user


def make_delivery_order(
    session: Session,
    store: Store,
    *,
    dropoff: tuple[float, float] | None = None,
    status: OrderStatus = OrderStatus.READY,
    released_at: datetime | None = None,
    patient: User | None = None,
    quantity: int = 1,
    rx: bool = False,
    open_job: bool = True,
    subtotal_minor: int = 3700,
) -> Order:
    """A delivery order in `status`, its stock reserved from a fresh lot; a job if ready."""
    now = clock.now()
    released_at = released_at or now - timedelta(minutes=20)
    patient = patient or make_user_fast(session, Role.PATIENT)
    product = make_product(session, rx_only=rx)
    lot = make_lot(
        session,
        store,
        product,
        on_hand=quantity + 5,
        reserved=quantity,
        price_minor=subtotal_minor // quantity,
    )
    dropoff = dropoff or factories.offset(1500, 800)
    order = Order(
        patient_id=patient.id,
        store_id=store.id,
        status=status,
        fulfillment=Fulfillment.DELIVERY,
        requested_fulfillment="delivery",
        routing_reason="Delivered from the nearest store that has everything.",
        patient_location=point_element(*dropoff),
        delivery_location=point_element(*dropoff),
        delivery_address_text="Room 501, 8 Example Rd",
        currency="CNY",
        subtotal_minor=subtotal_minor,
        delivery_fee_minor=store.delivery_fee_minor,
        pickup_code="111111",
        delivery_code=DELIVERY_CODE,
        released_at=released_at,
        sla_deadline=released_at + timedelta(minutes=120),
        ready_at=now if status is OrderStatus.READY else None,
        created_at=now,
    )
    order.lines.append(
        OrderLine(
            product_id=product.id,
            quantity=quantity,
            price_minor=subtotal_minor // quantity,
            rx_only=rx,
            allocations=[LotAllocation(lot_id=lot.id, quantity=quantity)],
        )
    )
    lifecycle.create(session, order, actor_id=patient.id, at=released_at)
    if open_job and status is OrderStatus.READY:
        service.open_job_for_order(session, order, now=now)
    return order


def job_of(session: Session, order: Order) -> Job:
    """The order's newest job."""
    from sqlalchemy import select

    return session.scalars(
        select(Job).where(Job.order_id == order.id).order_by(Job.attempt.desc())
    ).first()


def lot_of(session: Session, order: Order) -> Lot:
    session.expire_all()
    allocation = order.lines[0].allocations[0]
    return session.get(Lot, allocation.lot_id)


def make_user_fast(session: Session, role: Role) -> User:
    """A user nobody signs in as (no password hashing: it is slow by design)."""
    user = User(
        email=f"fast-{role.value}-{next(_seq)}@test.example.com",
        name=f"Fast {role.value}",
        password_hash="not-a-real-hash",
        role=role,
    )
    session.add(user)
    session.flush()
    return user


def make_couriers_fast(session: Session, n: int, *, home_store: Store, at) -> list[User]:
    """Many couriers at once, without hashing a password for each (nobody signs in as them)."""
    users = [
        User(
            email=f"fast-courier-{next(_seq)}@test.example.com",
            name="Fast Courier",
            password_hash="not-a-real-hash",
            role=Role.COURIER,
        )
        for _ in range(n)
    ]
    session.add_all(users)
    session.flush()
    session.add_all(
        Courier(user_id=u.id, home_store_id=home_store.id, location=point_element(*at))
        for u in users
    )
    session.flush()
    return users
