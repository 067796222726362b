"""PostgreSQL restarted while patients place orders: the API answers 503 (never a 500) while it
is down, recovers by itself, every order that got a 2xx is in the database afterwards, and a
client that retries a 503 with its Idempotency-Key ends with exactly one order."""

import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o.orders.models import Order
from stores.models import Lot
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset, payment_app
from tests.faults.conftest import running_api, service_env
from tests.orders.helpers import order_body
from tests.polling import wait_for

pytestmark = pytest.mark.slow

PLACERS = 3
OUTAGE_S = 3


def _seed(engine):
    with Session(engine, expire_on_commit=False) as s:
        store = make_store(s, at=offset(500, 0))
        product = make_product(s)
        lot = make_lot(s, store, product, on_hand=100_000)
        patient = make_user(s)
        payment_app(s)
        s.commit()
        return product.id, lot.id, auth(patient)


def test_orders_during_a_postgres_restart_get_503_and_none_that_got_201_is_lost(
    spare_pg, spare_engine, spare_redis
):
    product_id, lot_id, headers = _seed(spare_engine)
    body = order_body([(product_id, 1)])
    # A request that died with the database leaves its key claimed: let a retry take it over
    # soon. The per-patient order limit and hoarding caps are raised: this one patient orders far
    # faster and more than any (the orders stay unpaid).
    env = service_env(
        spare_pg.url,
        spare_redis.url,
        O2O_IDEMPOTENCY_STALE_SECONDS="5",
        O2O_ORDER_RATE_LIMIT="100000/minute",
        O2O_MAX_UNPAID_ORDERS="1000000",
        O2O_MAX_OPEN_UNITS_PER_PRODUCT="1000000",
    )
    results: list[tuple[str, str, int | None, dict | None, dict]] = []
    phase = ["before"]
    stop = threading.Event()

    def place(client: httpx.Client, key: str) -> httpx.Response:
        return client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})

    def placer(base: str) -> None:
        # Generous: while PostgreSQL takes its time to shut down, a request may spend several
        # connect timeouts (claim, giving the key back, the session's end) before its 503.
        with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
            while not stop.is_set():
                key, at = str(uuid.uuid4()), phase[0]
                try:
                    r = place(client, key)
                    results.append((at, key, r.status_code, r.json(), dict(r.headers)))
                except httpx.TransportError as exc:
                    results.append((at, key, None, {"transport": repr(exc)}, {}))
                time.sleep(0.02)

    def count(at: str, status: int) -> int:
        return sum(1 for p, _, s, _, _ in list(results) if p == at and s == status)

    with running_api(env, "faults-api-pg.log") as base:
        threads = [threading.Thread(target=placer, args=(base,)) for _ in range(PLACERS)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: count("before", 201) >= 10, 60, "orders before the outage")
            phase[0] = "outage"
            spare_pg.stop("fast")
            time.sleep(OUTAGE_S)
            phase[0] = "restarted"
            spare_pg.start()
            wait_for(lambda: count("restarted", 201) >= 10, 60, "orders after the restart")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=90)

        statuses = {s for _, _, s, _, _ in results}
        assert statuses <= {201, 503}, [r[2:4] for r in results if r[2] not in (201, 503)]
        unavailable = [r for r in results if r[2] == 503]
        assert unavailable, "no request saw the outage"
        for _, _, _, payload, resp_headers in unavailable:
            assert payload["error"]["code"] == "service_unavailable"
            assert "retry-after" in resp_headers
        # Recovered by itself: the last answers are all successes again.
        tail = [s for p, _, s, _, _ in results if p == "restarted"][-5:]
        assert tail == [201] * 5

        # Every order acknowledged with a 201 is stored.
        acknowledged = {payload["id"] for _, _, s, payload, _ in results if s == 201}
        with Session(spare_engine) as s:
            stored = {str(i) for i in s.scalars(select(Order.id).where(Order.id.in_(acknowledged)))}
        assert stored == acknowledged

        # A client that retries each 503 with its key ends with exactly one order per key.
        with httpx.Client(base_url=base, timeout=20, headers=headers) as client:
            for _, key, _, _, _ in unavailable:

                def settled(key=key) -> dict | None:
                    r = place(client, key)
                    # 409: the first try's claim is still in flight until it goes stale.
                    assert r.status_code in (201, 409), r.text
                    return r.json() if r.status_code == 201 else None

                acknowledged.add(wait_for(settled, 30, "a retry to settle", interval=0.5)["id"])

    with Session(spare_engine) as s:
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.store_id.isnot(None)))
        lot = s.get(Lot, lot_id)
        # One order per key that was ever tried, and stock reserved for exactly those.
        assert orders == len(acknowledged) == len(results)
        assert lot.reserved == len(acknowledged)
