"""Stock analytics as a pharmacist reads them: ABC classes against a hand-computed example,
days of stock, near-expiry value, turnover and dead stock, counted in the store's own days."""

from datetime import timedelta

import pytest

from o2o import clock
from o2o.analytics import service
from o2o.orders import lifecycle
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_order, make_product, make_store, make_user
from tests.local_days import CASE_IDS, CASES, local_midnight
from tests.members.helpers import completed_order

API = "/api/v1"


@pytest.fixture
def shop(db):
    """A store whose last 90 days were written out by hand.

    Sales value by product (yuan): P1 500, P2 300, P3 100, P4 60, P5 40 -> 1000 in all.
    Ranked, the products above each make 0%, 50%, 80%, 90%, 96% of sales: P1 and P2 make the
    first 80% (A), P3 and P4 the next 15% (B), P5 the rest (C). P6 is on the shelf, unsold (C,
    dead stock).
    """
    store = make_store(db)
    patient = make_user(db, role=Role.PATIENT)
    now = clock.now()
    prices = {"P1": 5000, "P2": 3000, "P3": 2000, "P4": 1500, "P5": 1000, "P6": 800}
    products = {name: make_product(db, name=name) for name in prices}
    lots = {
        name: make_lot(db, store, products[name], on_hand=100, price_minor=price)
        for name, price in prices.items()
    }
    # P5 also has a lot near expiry (45 days: inside 90) worth 10 x 10.00.
    make_lot(db, store, products["P5"], on_hand=10, days=45, price_minor=1000)
    # Units sold: P1 10, P2 10, P3 5, P4 4, P5 4; on different days within the period.
    completed_order(
        db, patient, store, [(lots["P1"], 6), (lots["P2"], 10)], at=now - timedelta(days=3)
    )
    completed_order(
        db, patient, store, [(lots["P1"], 4), (lots["P3"], 5)], at=now - timedelta(days=40)
    )
    completed_order(
        db, patient, store, [(lots["P4"], 4), (lots["P5"], 4)], at=now - timedelta(days=80)
    )
    # Not sales of this period or store: completed 100 days ago, cancelled, another store's.
    completed_order(db, patient, store, [(lots["P6"], 9)], at=now - timedelta(days=100))
    cancelled = make_order(db, patient, store, [(lots["P6"], 3)])
    lifecycle.cancel(db, lifecycle.lock_order(db, cancelled.id), reason="changed mind")
    other = make_store(db)
    completed_order(db, patient, other, [(make_lot(db, other, products["P6"], on_hand=9), 9)])
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    return {"store": store, "products": products, "staff": staff}


def test_abc_classes_match_the_hand_computed_example(client, shop):
    r = client.get(
        f"{API}/stores/{shop['store'].id}/analytics/abc?days=90", headers=auth(shop["staff"])
    )
    assert r.status_code == 200, r.text
    got = r.json()
    by_name = {i["name"]: i for i in got["items"]}
    assert [i["name"] for i in got["items"]] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert {n: i["abc_class"] for n, i in by_name.items()} == {
        "P1": "A",
        "P2": "A",
        "P3": "B",
        "P4": "B",
        "P5": "C",
        "P6": "C",
    }
    assert got["sales_minor"] == 100_000
    assert got["class_counts"] == {"A": 2, "B": 2, "C": 2}
    assert [by_name[n]["sales_minor"] for n in ("P1", "P2", "P3", "P4", "P5", "P6")] == [
        50_000,
        30_000,
        10_000,
        6_000,
        4_000,
        0,
    ]
    assert [by_name[n]["units_sold"] for n in ("P1", "P2", "P3", "P4", "P5")] == [10, 10, 5, 4, 4]
    assert by_name["P2"]["cumulative_share"] == 0.8 and by_name["P3"]["share"] == 0.1
    # Days of stock: on hand over units sold per day. P1 holds 90 after selling 10 in 90 days:
    # 90 / (10 / 90) = 810 days; P5 holds 96 + 10 after selling 4: 106 / (4 / 90) = 2385.
    assert by_name["P1"]["on_hand"] == 90 and by_name["P1"]["days_of_stock"] == 810.0
    assert by_name["P5"]["days_of_stock"] == 2385.0
    assert by_name["P6"]["days_of_stock"] is None
    # Near expiry: only P5's 45-day lot, which sold its 4 first (first expiry, first out):
    # 6 left x 10.00.
    assert by_name["P5"]["near_expiry_units"] == 6
    assert by_name["P5"]["near_expiry_value_minor"] == 6_000
    assert sum(i["near_expiry_value_minor"] for i in got["items"]) == 6_000
    assert got["near_expiry_days"] == 90 and got["days"] == 90


def test_turnover_and_dead_stock(client, shop):
    r = client.get(
        f"{API}/stores/{shop['store'].id}/analytics/turnover?days=90", headers=auth(shop["staff"])
    )
    assert r.status_code == 200, r.text
    got = r.json()
    # Stock now at lot prices: P1 90x50 + P2 90x30 + P3 95x20 + P4 96x15 + P5 106x10 + P6 91x8
    stock = 90 * 5000 + 90 * 3000 + 95 * 2000 + 96 * 1500 + 106 * 1000 + 91 * 800
    assert got["stock_value_minor"] == stock
    assert got["sales_minor"] == 100_000 and got["units_sold"] == 33
    assert got["turnover_ratio"] == round(100_000 / stock, 3)
    assert got["days_of_stock"] == round(stock * 90 / 100_000, 1)
    assert [d["name"] for d in got["dead_stock"]] == ["P6"]
    assert got["dead_stock"][0]["last_sold_at"] is not None  # sold 100 days ago
    assert got["dead_stock_value_minor"] == 91 * 800


def test_a_shorter_period_leaves_the_older_sales_out(client, shop):
    r = client.get(
        f"{API}/stores/{shop['store'].id}/analytics/abc?days=30", headers=auth(shop["staff"])
    )
    classes = {i["name"]: (i["abc_class"], i["sales_minor"]) for i in r.json()["items"]}
    # Only the order of 3 days ago: P1 30000 and P2 30000 of 60000.
    assert classes["P1"] == ("A", 30_000) and classes["P2"] == ("A", 30_000)
    assert classes["P3"] == ("C", 0)


@pytest.mark.parametrize("days", ["0", "-1", "100000", "ninety"])
def test_a_bad_period_is_422(client, shop, days):
    r = client.get(
        f"{API}/stores/{shop['store'].id}/analytics/abc?days={days}", headers=auth(shop["staff"])
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


def test_admins_read_any_store_other_staff_none(client, db, shop):
    path = f"{API}/stores/{shop['store'].id}/analytics/abc"
    assert client.get(path, headers=auth(make_user(db, role=Role.ADMIN))).status_code == 200
    other = make_user(db, role=Role.PHARMACIST, store_ids=[make_store(db).id])
    assert client.get(path, headers=auth(other)).status_code == 404
    assert client.get(path, headers=auth(make_user(db, role=Role.PATIENT))).status_code == 403
    assert client.get(path).status_code == 401
    assert (
        client.get(
            f"{API}/stores/999999/analytics/turnover", headers=auth(shop["staff"])
        ).status_code
        == 404
    )


@pytest.mark.parametrize(("name", "zone", "at", "local_day"), CASES, ids=CASE_IDS)
def test_the_period_is_the_store_s_own_days(db, name, zone, at, local_day):
    store = make_store(db, timezone=zone)
    patient = make_user(db, role=Role.PATIENT)
    lot = make_lot(db, store, make_product(db), on_hand=50, price_minor=1000)
    today_starts = local_midnight(local_day, zone)
    completed_order(db, patient, store, [(lot, 1)], at=today_starts)  # first instant of today
    completed_order(db, patient, store, [(lot, 2)], at=today_starts - timedelta(seconds=1))
    one_day = service.abc_report(db, store, 1, now=at)
    assert (one_day["from"], one_day["to"]) == (local_day, local_day)
    assert one_day["items"][0]["units_sold"] == 1
    two_days = service.abc_report(db, store, 2, now=at)
    assert two_days["from"] == local_day - timedelta(days=1)
    assert two_days["items"][0]["units_sold"] == 3
