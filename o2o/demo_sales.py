"""Demo sales history and members: eight weeks of completed counter sales at the first demo
stores (so stock analytics has a Pareto curve, days of stock and dead stock to show) and members
at every level (so the membership answer and free delivery show something real).

Built through the real order record: stock is reserved FEFO and leaves the shelf at hand-over,
each sale is paid at the counter, and its completion earns points as any completion does (every
process that loads the demo wires the event subscribers: the command line, the test suite).
Idempotent: once the demo members exist, a second run changes nothing.
"""

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.demo import DEMO_PASSWORD
from o2o.members import service as members_service
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus
from o2o.payments import service as payments_service
from o2o.payments.models import PaymentMethod
from o2o.security import new_code
from o2o.users import service as users_service
from o2o.users.models import Role, User
from stores import allocation
from stores import service as stores_service
from stores.models import Lot, Product, Store

WEEKS = 8
# Stores with a sales history, counter sales per store, and the products they sell most of.
SALES_STORES = 3
SALES_PER_STORE = 40
POPULAR_PRODUCTS = 30
SEED = 20261205
DEMO_REASON = "Demo sale at the counter."


@dataclass(frozen=True)
class DemoMember:
    email: str
    name: str
    level: str  # the level the sales history brings them to


# Customers whose counter sales make the stores' history (their levels fall where they fall).
DEMO_SHOPPERS = (
    ("shopper.1@example.com", "Wang Fang"),
    ("shopper.2@example.com", "Li Na"),
    ("shopper.3@example.com", "Zhang Wei"),
)

DEMO_MEMBERS = (
    DemoMember("member.silver@example.com", "Sun Yin", "silver"),
    DemoMember("member.gold@example.com", "Jin Hua", "gold"),
    DemoMember("member.platinum@example.com", "Bai Lan", "platinum"),
)


def _target_spend(level: str) -> int:
    s = get_settings()
    return {
        "member": 0,
        "silver": s.member_silver_spend_minor,
        "gold": s.member_gold_spend_minor,
        "platinum": s.member_platinum_spend_minor,
    }[level]


def _sellable_lots(session: Session, store: Store, now: datetime) -> dict[int, list[int]]:
    """{product id: [price, units sellable]} of the over-the-counter products the store holds
    plenty of (20 units or more), by id."""
    rows = session.execute(
        select(Lot.product_id, Lot.price_minor, Lot.on_hand - Lot.reserved)
        .join(Product, Product.id == Lot.product_id)
        .where(
            Lot.store_id == store.id,
            Lot.expiry_date >= stores_service.min_sellable_expiry(store, now),
            Product.rx_only.is_(False),
            Product.controlled.is_(False),
            Product.max_per_order.is_(None),
        )
        .order_by(Lot.product_id, Lot.expiry_date)
    ).all()
    found: dict[int, list[int]] = {}
    for product_id, price, free in rows:
        found.setdefault(product_id, [price, 0])[1] += free
    return {p: v for p, v in found.items() if v[1] >= 20}


def _sell(
    session: Session,
    store: Store,
    patient: User,
    cart: list[tuple[int, int]],
    *,
    at: datetime,
    now: datetime,
) -> Order:
    """Record one counter sale at `at`: reserved, paid at the counter, handed over."""
    reserved = allocation.reserve_lines(
        session,
        store.id,
        [allocation.LineRequest(product_id, qty) for product_id, qty in cart],
        min_expiry=stores_service.min_sellable_expiry(store, now),
    )
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        store_id=store.id,
        status=OrderStatus.RELEASED,
        fulfillment=Fulfillment.PICKUP,
        requested_fulfillment="pickup",
        routing_reason=DEMO_REASON,
        patient_location=store.location,
        currency=store.currency,
        subtotal_minor=0,
        delivery_fee_minor=0,
        compensation_minor=0,
        pickup_code=new_code(),
        delivery_code=new_code(),
        pickup_code_failures=0,
        created_at=at,
        released_at=at,
    )
    subtotal = 0
    for product_id, qty in cart:
        lots = reserved[product_id]
        price = sum(a.quantity * a.price_minor for a in lots) // qty
        subtotal += price * qty
        order.lines.append(
            OrderLine(
                product_id=product_id,
                quantity=qty,
                price_minor=price,
                rx_only=False,
                allocations=[LotAllocation(lot_id=a.lot_id, quantity=a.quantity) for a in lots],
            )
        )
    order.subtotal_minor = subtotal
    lifecycle.create(session, order, actor_id=patient.id, at=at)
    payments_service.open_payment(session, order, method=PaymentMethod.AT_STORE, due_at=None)
    lifecycle.transition(session, order, OrderStatus.PREPARING, at=at)
    lifecycle.transition(session, order, OrderStatus.READY, at=at + timedelta(minutes=5))
    done = at + timedelta(minutes=8)
    payments_service.collect_at_store(session, order, collected=True, actor_id=patient.id, now=done)
    # Earns points as any completion does (the command line wires the subscribers).
    lifecycle.complete(session, order, at=done)
    return order


def load_demo_sales(session: Session, store_ids: list[int], *, now: datetime | None = None) -> int:
    """Create the demo members and the stores' sales history, once; return the sales made."""
    if users_service.get_by_email(session, DEMO_MEMBERS[0].email) is not None:
        return 0
    now = now or clock.now()
    rng = random.Random(SEED)
    members = [
        users_service.create_user(
            session,
            email=m.email,
            password=DEMO_PASSWORD,
            name=m.name,
            role=Role.PATIENT,
        )
        for m in DEMO_MEMBERS
    ]
    shoppers = [
        users_service.create_user(
            session, email=email, password=DEMO_PASSWORD, name=name, role=Role.PATIENT
        )
        for email, name in DEMO_SHOPPERS
    ]
    stores = [session.get(Store, store_id) for store_id in store_ids[:SALES_STORES]]
    made = 0
    window_minutes = WEEKS * 7 * 24 * 60
    for store in stores:
        stock = _sellable_lots(session, store, now)
        products = sorted(stock)[:POPULAR_PRODUCTS]
        if not products:
            continue
        # A long tail: the n-th product sells about 1/n as often as the first.
        weights = [1 / (rank + 1) for rank in range(len(products))]
        for _ in range(SALES_PER_STORE):
            picks = set(rng.choices(products, weights=weights, k=rng.randint(1, 3)))
            cart = [(p, rng.randint(1, 2)) for p in sorted(picks)]
            cart = [(p, qty) for p, qty in cart if stock[p][1] - qty >= 5]  # never sell out
            if not cart:
                continue
            at = now - timedelta(minutes=rng.randint(60, window_minutes))
            _sell(session, store, rng.choice(shoppers), cart, at=at, now=now)
            for p, qty in cart:
                stock[p][1] -= qty
            made += 1
    # The members' own shopping, up to their level: the dearest products of each store in turn,
    # never more than leaves five on the shelf.
    for member, demo in zip(members, DEMO_MEMBERS, strict=True):
        short = _target_spend(demo.level) - members_service.spend_12m(session, member.id, now=now)
        for store_id in store_ids:
            if short <= 0:
                break
            store = session.get(Store, store_id)
            stock = _sellable_lots(session, store, now)
            dearest = sorted(stock, key=lambda p: (-stock[p][0], p))[:3]
            cart = [(p, min(6, stock[p][1] - 5)) for p in dearest]
            if not cart:
                continue
            at = now - timedelta(days=rng.randint(2, WEEKS * 7))
            order = _sell(session, store, member, cart, at=at, now=now)
            short -= order.total_minor
            made += 1
    return made
