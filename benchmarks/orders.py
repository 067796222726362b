"""Order placement under contention: concurrent patients ordering one hot product at one store.

Each placement goes through the real service layer with its own session and committed
transaction, as a request does: cart validation, the store search, routing, the locked FEFO
reservation, the order rows, the outbox event, and the response view.

Phase 1 (throughput): enough stock for everyone; every client hits the same lots.
Phase 2 (sell-out): the clients race for the last units; exactly that many may be sold.
After each phase the stock is checked: no lot holds more reserved than on hand, and every reserved
unit belongs to an allocation of a placed order (0 oversells).

Run: `bash scripts/bench.sh orders` (options: `python -m benchmarks.orders --help`).
"""

import argparse
import json
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import String, cast, delete, func, select, text, union_all

from benchmarks import analyse
from benchmarks.search import percentile
from o2o import clock
from o2o.config import get_settings
from o2o.db import get_engine, session_scope
from o2o.errors import DomainError
from o2o.geo import point_element
from o2o.order_flow import checkout, views
from o2o.order_flow.schemas import OrderIn
from o2o.orders.models import LotAllocation, Order, OrderEvent, OrderLine
from o2o.outbox import OutboxEvent
from o2o.payments import dev_app
from o2o.payments.models import Payment
from o2o.security import create_access_token, hash_password
from o2o.users.models import Role, User
from stores.models import Lot, Product, Store

# Far from any demo or search-benchmark data, so the search sees this store alone.
SITE = (-33.8688, 151.2093)
TAG = "bench-orders"
# The patients' email addresses: `{TAG}-<n>@...`.
PATIENT_EMAILS = f"{TAG}-%@bench.example.com"


@dataclass
class Phase:
    name: str
    attempts: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    units_sold: int = 0


# Each patient's past orders at the store, one a day back from today: collected and paid, one
# line of the hot product each.
PAST_ORDERS = 100
HISTORY = "bench history"  # their routing reason

# A store's database is never empty: its patients have ordered before, and its tables have been
# analysed. Without a history the sale began on empty tables, and the plans PostgreSQL prepared
# for them (a scan of the whole table) stayed while the sale filled them: a patient's caps
# (`o2o.order_flow.limits`) then read every order placed so far, not that patient's few.
_HISTORY_SQL = f"""
WITH g AS (
    SELECT gen_random_uuid() AS id, u.id AS patient_id,
           now() - make_interval(days => i, mins => u.id % 600) AS at
    FROM users u CROSS JOIN generate_series(1, :per_patient) i
    WHERE u.email LIKE '{PATIENT_EMAILS}'
),
o AS (
    INSERT INTO orders (id, patient_id, store_id, status, fulfillment, requested_fulfillment,
                        routing_reason, currency, subtotal_minor, pickup_code, delivery_code,
                        created_at, released_at, ready_at, completed_at)
    SELECT g.id, g.patient_id, :store_id, 'completed', 'pickup', 'pickup', '{HISTORY}',
           'CNY', 1200, '000000', '000000', g.at, g.at, g.at, g.at
    FROM g
    RETURNING id, created_at
),
lines AS (
    INSERT INTO order_lines (order_id, product_id, quantity, price_minor, rx_only)
    SELECT o.id, :product_id, 1, 1200, false FROM o
)
INSERT INTO payments (id, order_id, method, status, amount_minor, captured_minor, currency,
                      created_at, captured_at)
SELECT gen_random_uuid(), o.id, 'at_store', 'captured', 1200, 1200, 'CNY', o.created_at,
       o.created_at
FROM o
"""


def setup(clients: int, units: int, lots: int) -> dict:
    """Create the store, the hot product, its lots and one patient per client, with an order
    history of `PAST_ORDERS` each (the tables analysed after it)."""
    cleanup()
    password = hash_password("bench-password")
    with session_scope() as s:
        store = Store(
            name="Bench Hot Store",
            address="1 Benchmark Way",
            location=point_element(SITE[0] + 0.003, SITE[1]),
            timezone="UTC",
            opening_hours=None,
            offers_pickup=True,
            offers_delivery=False,
            currency="CNY",
        )
        product = Product(
            name="Bench hot product",
            generic_name=TAG,
            strength="1",
            dosage_form="tablet",
            pack_size=10,
            gtin="00000000424242",
        )
        s.add_all([store, product])
        s.flush()
        per_lot = units // lots
        for i in range(lots):
            s.add(
                Lot(
                    store_id=store.id,
                    product_id=product.id,
                    lot_number=f"{TAG}-{i}",
                    expiry_date=clock.today(store.timezone) + timedelta(days=120 + 30 * i),
                    on_hand=per_lot + (units - per_lot * lots if i == 0 else 0),
                    price_minor=1200,
                    currency="CNY",
                )
            )
        patients = [
            User(
                email=f"{TAG}-{i}@bench.example.com",
                name=f"Bench patient {i}",
                password_hash=password,
                role=Role.PATIENT,
            )
            for i in range(clients)
        ]
        s.add_all(patients)
        s.flush()
        s.execute(
            text(_HISTORY_SQL),
            {"per_patient": PAST_ORDERS, "store_id": store.id, "product_id": product.id},
        )
        dev_app.register(s, webhook_url="http://127.0.0.1:8765/hooks")
        world = {"store_id": store.id, "product_id": product.id, "patients": patients}
    with session_scope() as s:
        analyse(s, "users", "orders", "order_lines", "payments", "lots", "lot_allocations")
    return world


def hot_order(product_id: int) -> dict:
    """The body of an order for one unit of the hot product, picked up, from the site."""
    return {
        "items": [{"product_id": product_id, "quantity": 1}],
        "location": {"lat": SITE[0], "lon": SITE[1]},
        "fulfillment": "pickup",
    }


def patient_tokens(world: dict) -> list[str]:
    """A bearer token for each of the world's patients."""
    return [create_access_token(str(p.id), role="patient", minutes=120) for p in world["patients"]]


def set_stock(store_id: int, units: int) -> None:
    """Give the store exactly `units` more sellable units (in its first lot)."""
    with session_scope() as s:
        lot = s.scalars(select(Lot).where(Lot.store_id == store_id).order_by(Lot.id)).first()
        lot.on_hand = lot.reserved + units
        others = s.scalars(select(Lot).where(Lot.store_id == store_id, Lot.id != lot.id))
        for other in others:
            other.on_hand = other.reserved


def run_phase(name: str, world: dict, clients: int, attempts: int, max_qty: int) -> Phase:
    phase = Phase(name, attempts=attempts)
    lock = threading.Lock()
    counter = iter(range(attempts))
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        patient = world["patients"][index]
        start.wait()
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            qty = 1 + n % max_qty
            body = OrderIn(
                items=[{"product_id": world["product_id"], "quantity": qty}],
                location={"lat": SITE[0], "lon": SITE[1]},
                fulfillment="pickup",
            )
            t0 = time.perf_counter()
            try:
                with session_scope() as s:
                    order = checkout.place_order(s, patient, body)
                    views.present(s, order, patient)
                    order_id = order.id
                outcome, sold = "placed", qty
            except DomainError as exc:
                outcome, sold = exc.code, 0
            elapsed = (time.perf_counter() - t0) * 1000
            if outcome == "placed":
                # Paid at once (not timed), by a signed captured event as the payment app sends.
                with session_scope() as s:
                    dev_app.pay(s, s.get(Order, order_id))
            with lock:
                phase.outcomes[outcome] += 1
                phase.units_sold += sold
                if outcome == "placed":
                    phase.latencies_ms.append(elapsed)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    phase.seconds = time.perf_counter() - t0
    return phase


def check_stock(store_id: int) -> dict:
    """Count oversells: lots reserving more than on hand, or reserved units no order holds."""
    with session_scope() as s:
        lots = s.scalars(select(Lot).where(Lot.store_id == store_id)).all()
        allocated = dict(
            s.execute(
                select(LotAllocation.lot_id, func.sum(LotAllocation.quantity))
                .where(LotAllocation.lot_id.in_([lot.id for lot in lots]))
                .group_by(LotAllocation.lot_id)
            ).all()
        )
        ordered = s.scalar(
            select(func.coalesce(func.sum(OrderLine.quantity), 0))
            .join(Order)
            .where(Order.store_id == store_id, Order.routing_reason != HISTORY)
        )
        oversold = sum(max(0, lot.reserved - lot.on_hand) for lot in lots)
        unaccounted = sum(abs(lot.reserved - allocated.get(lot.id, 0)) for lot in lots)
        return {
            "on_hand": sum(lot.on_hand for lot in lots),
            "reserved": sum(lot.reserved for lot in lots),
            "ordered_units": int(ordered),
            "oversold_units": oversold,
            "reserved_without_order": unaccounted,
        }


def cleanup() -> None:
    """Remove everything a previous run created (the benchmark database is shared)."""
    # By subqueries, not lists of ids: a history has thousands of orders.
    store_ids = select(Store.id).where(Store.name == "Bench Hot Store")
    order_ids = select(Order.id).where(Order.store_id.in_(store_ids))
    aggregates = union_all(
        select(cast(Order.id, String)).where(Order.store_id.in_(store_ids)),
        select(cast(Payment.id, String)).where(Payment.order_id.in_(order_ids)),
    )
    unsynchronised = {"synchronize_session": False}
    with session_scope() as s:
        for statement in (
            delete(OutboxEvent).where(OutboxEvent.aggregate_id.in_(aggregates)),
            delete(OrderEvent).where(OrderEvent.order_id.in_(order_ids)),
            # Their lines and payments go with them (ON DELETE CASCADE).
            delete(Order).where(Order.id.in_(order_ids)),
            delete(Lot).where(Lot.store_id.in_(store_ids)),
            delete(Store).where(Store.id.in_(store_ids)),
            delete(Product).where(Product.generic_name == TAG),
            delete(User).where(User.email.like(PATIENT_EMAILS)),
        ):
            s.execute(statement.execution_options(**unsynchronised))


def report(phase: Phase, stock: dict, clients: int) -> dict:
    placed = phase.outcomes.get("placed", 0)
    lat = phase.latencies_ms
    return {
        "phase": phase.name,
        "clients": clients,
        "attempts": phase.attempts,
        "placed": placed,
        "refused": dict((k, v) for k, v in phase.outcomes.items() if k != "placed"),
        "seconds": round(phase.seconds, 2),
        "placed_per_s": round(placed / phase.seconds, 1) if phase.seconds else None,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p95_ms": round(percentile(lat, 95), 1) if lat else None,
        "p99_ms": round(percentile(lat, 99), 1) if lat else None,
        "units_sold": phase.units_sold,
        **stock,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--orders", type=int, default=2000, help="placements in phase 1")
    parser.add_argument("--sellout-units", type=int, default=100)
    parser.add_argument("--sellout-attempts", type=int, default=400)
    parser.add_argument("--keep", action="store_true", help="leave the data in place")
    args = parser.parse_args()

    # One connection per client, as under a server with that many busy request threads.
    os.environ["O2O_DB_POOL_SIZE"] = str(args.clients)
    get_settings.cache_clear()
    get_engine.cache_clear()
    engine = get_engine()
    world = setup(args.clients, units=args.orders * 3, lots=3)
    try:
        results = []
        throughput = run_phase("throughput", world, args.clients, args.orders, max_qty=2)
        results.append(report(throughput, check_stock(world["store_id"]), args.clients))
        set_stock(world["store_id"], args.sellout_units)
        before = check_stock(world["store_id"])["reserved"]
        sellout = run_phase("sell-out", world, args.clients, args.sellout_attempts, max_qty=3)
        stock = check_stock(world["store_id"])
        stock["sold_in_phase"] = stock["reserved"] - before
        results.append(report(sellout, stock, args.clients))
    finally:
        if not args.keep:
            cleanup()
        engine.dispose()
    print(json.dumps(results, indent=2))
    ok = all(r["oversold_units"] == 0 and r["reserved_without_order"] == 0 for r in results)
    ok = ok and results[1]["sold_in_phase"] <= args.sellout_units
    print(
        f"orders: {results[0]['placed_per_s']} placements/s, p99 {results[0]['p99_ms']} ms with "
        f"{args.clients} clients on one hot product; oversold units: "
        f"{sum(r['oversold_units'] for r in results)}"
    )
    if not ok:
        raise SystemExit("OVERSOLD: the stock check failed")


if __name__ == "__main__":
    main()
