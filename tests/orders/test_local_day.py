"""Orders at stores on both sides of UTC (Kiritimati, UTC+14; Pago Pago, UTC-11): checkout sells
only lots past the shelf life counted from the store's local today, and a pickup's hold runs its
hours from the moment it is ready, in every zone. Checked at pinned instants whose local days are
known, and at the real time of the run."""

import uuid
from datetime import timedelta

import pytest

from o2o import clock
from o2o.config import get_settings
from o2o.order_flow.tasks import expire_due_orders
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_product, make_store, make_user, offset, pay_through
from tests.local_days import CASE_IDS, CASES, ZONES
from tests.orders.helpers import order_body, stock

URL = "/api/v1/orders"
SHELF_LIFE_DAYS = 30


def zone_store(db, zone: str, north_m: float = 500):
    return make_store(db, at=offset(north_m, 0), timezone=zone, min_shelf_life_days=SHELF_LIFE_DAYS)


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_checkout_sells_only_lots_past_the_shelf_life_of_the_stores_day(
    client, db, case, zone, at, local_day
):
    store = zone_store(db, zone)
    product = make_product(db)
    last_day_inside = local_day + timedelta(days=SHELF_LIFE_DAYS - 1)
    inside = make_lot(db, store, product, on_hand=5, expiry_date=last_day_inside)
    sellable = make_lot(db, store, product, on_hand=1, expiry_date=last_day_inside + timedelta(1))
    patient = make_user(db, role=Role.PATIENT)
    with clock.use(lambda: at):
        too_many = client.post(URL, json=order_body([(product.id, 2)]), headers=auth(patient))
        placed = client.post(URL, json=order_body([(product.id, 1)]), headers=auth(patient))
    assert too_many.status_code == 409
    assert too_many.json()["error"]["code"] == "insufficient_stock"
    assert placed.status_code == 201, placed.text
    assert stock(db, inside) == (5, 0)
    assert stock(db, sellable) == (1, 1)


@pytest.mark.parametrize(("case", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_a_pickup_hold_runs_its_hours_from_ready_whatever_the_stores_day(
    client, db, case, zone, at, local_day
):
    store = zone_store(db, zone)
    lot = make_lot(db, store, make_product(db), on_hand=3)
    patient = make_user(db, role=Role.PATIENT)
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    with clock.use(lambda: at):
        r = client.post(URL, json=order_body([(lot.product_id, 2)]), headers=auth(patient))
        assert r.status_code == 201, r.text
        order_id = uuid.UUID(r.json()["id"])
        assert pay_through(client, db, order_id).status_code == 200
        for action in ("prepare", "ready"):
            r = client.post(f"{URL}/{order_id}/{action}", headers=auth(staff))
            assert r.status_code == 200, r.text
    hold = timedelta(hours=get_settings().pickup_hold_hours)
    order = db.get(Order, order_id)
    assert order.hold_expires_at == at + hold
    assert expire_due_orders(db, now=at + hold - timedelta(seconds=1)) == (0, 0)
    assert expire_due_orders(db, now=at + hold) == (1, 1)
    db.expire_all()
    assert db.get(Order, order_id).status is OrderStatus.CANCELLED
    assert stock(db, lot) == (3, 0)


def test_checkout_counts_shelf_life_from_the_stores_day_at_the_real_time(client, db):
    patient = make_user(db, role=Role.PATIENT)
    for n, zone in enumerate(ZONES):
        store = zone_store(db, zone, north_m=500 * (n + 1))
        for _ in range(2):  # once more if the store's day ended during the checkout
            day = clock.today(zone)
            product = make_product(db)
            last_day_inside = day + timedelta(days=SHELF_LIFE_DAYS - 1)
            inside = make_lot(db, store, product, on_hand=5, expiry_date=last_day_inside)
            sellable = make_lot(
                db, store, product, on_hand=1, expiry_date=last_day_inside + timedelta(1)
            )
            body = order_body([(product.id, 2)], store_id=store.id)
            too_many = client.post(URL, json=body, headers=auth(patient))
            body = order_body([(product.id, 1)], store_id=store.id)
            placed = client.post(URL, json=body, headers=auth(patient))
            if clock.today(zone) == day:
                break
        assert too_many.status_code == 409, zone
        assert placed.status_code == 201, placed.text
        assert stock(db, inside) == (5, 0) and stock(db, sellable) == (1, 1)
