"""Nearest-first walks the index refuses: PostGIS' geography index misorders a store on the
searched point written another way (here: the north pole at other longitudes), and PostgreSQL
refuses the ordered scan."""

import pytest
from sqlalchemy import func, select, text

from o2o.order_flow import split_checkout
from o2o.orders.models import Order
from o2o.users.models import Role
from stores import nearby, proximity
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
)
from tests.orders.helpers import order_body

POLE = (90.0, 2.220446049250313e-16)
# The walk as a city's table gets it, read along the index. The stores table of a test database
# holds a few rows: once the autovacuum has analysed it, PostgreSQL may read it whole and sort
# it instead, and then nothing refuses the walk. With the index's pages made cheap to read, its
# order is the cheaper plan, and the walk run again without index scans (`stores.proximity`)
# still reads the table whole.
ALONG_THE_INDEX = text("SET LOCAL random_page_cost = 0.001")


def test_a_walk_refused_without_its_savepoint_is_run_again_by_its_caller(db):
    stores = [make_store(db, at=(90.0, 0.0)), make_store(db, at=(90.0, 121.0))]
    db.commit()
    where = {"lat": POLE[0], "lon": POLE[1], "radius_m": 5000, "limit": 10}

    def listed() -> list[int]:
        # Inside the session's transaction, as a placement's walks are.
        db.execute(ALONG_THE_INDEX)
        page, _ = nearby.nearby_stores(db, **where)
        return sorted(item.store_id for item in page)

    # Unguarded, the refusal aborts the transaction: the caller is told, to roll back and redo.
    with proximity.redone_on_refusal(db), pytest.raises(proximity.WalkRefused):
        listed()
    db.rollback()
    # Guarded (the default), the walk runs in a savepoint and again without the index's order.
    assert listed() == sorted(store.id for store in stores)


def test_a_placement_whose_walk_is_refused_is_placed_again_with_guarded_walks(
    client, db, monkeypatch
):
    for at in ((90.0, 0.0), (90.0, 121.0)):
        make_store(db, at=at)
    store = make_store(db, at=offset(400, 0))
    product = make_product(db)
    lot = make_lot(db, store, product, on_hand=5)
    patient = make_user(db, role=Role.PATIENT)
    payment_app(db)
    refused, attempts = [], []
    real_walk = proximity.walk

    def refused_first(session, statement, params):
        # The placement's first walk is swapped for one PostgreSQL really refuses (the nearby
        # list's, at the pole next to the stores on it written another way); the walks after
        # it are the placement's own.
        monkeypatch.setattr(proximity, "walk", real_walk)
        refused.append(statement)
        session.execute(ALONG_THE_INDEX)  # for this attempt's transaction only
        nearby.nearby_stores(session, lat=POLE[0], lon=POLE[1], radius_m=5000, limit=10)

    monkeypatch.setattr(proximity, "walk", refused_first)
    attempt = split_checkout._place_and_present
    monkeypatch.setattr(
        split_checkout, "_place_and_present", lambda *a: attempts.append(1) or attempt(*a)
    )
    request = {
        "json": order_body([(product.id, 2)]),
        "headers": {**auth(patient), "Idempotency-Key": "refused-walk"},
    }

    r = client.post("/api/v1/orders", **request)

    assert r.status_code == 201, r.text
    # Refused once, then placed by the second attempt: once, at the store that holds the cart.
    assert (len(refused), len(attempts)) == (1, 2)
    assert r.json()["store"]["id"] == store.id
    db.refresh(lot)
    assert lot.reserved == 2
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    # The key's answer is the placed order's.
    again = client.post("/api/v1/orders", **request)
    assert again.status_code == 201 and again.json() == r.json()
    assert db.scalar(select(func.count()).select_from(Order)) == 1
