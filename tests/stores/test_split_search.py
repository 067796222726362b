"""Search with `allow_split`: the fewest stores that hold a cart together, when none holds it all."""

from datetime import timedelta

import pytest

from o2o import clock
from tests.factories import make_fleet_load, make_product
from tests.stores.helpers import SEARCH, at, search_body, stock, store_at

# A delivery zone around the stores of these tests.
ZONE = {
    "type": "Polygon",
    "coordinates": [
        [[121.40, 31.18], [121.55, 31.18], [121.55, 31.28], [121.40, 31.28], [121.40, 31.18]]
    ],
}


def plan(client, body) -> dict | None:
    response = client.post(SEARCH, json={**body, "allow_split": True})
    assert response.status_code == 200, response.text
    return response.json()["split_plan"]


def test_a_cart_no_store_holds_is_split_over_the_nearest_pair(client, db):
    a, b, c = make_product(db), make_product(db), make_product(db)
    holds_ab = store_at(db, 300)
    holds_c_far = store_at(db, 2000)
    holds_c_near = store_at(db, 900)
    holds_a = store_at(db, 100)  # nearest, but then two more are needed
    stock(db, holds_ab, a, 5)
    stock(db, holds_ab, b, 5)
    stock(db, holds_c_far, c, 5)
    stock(db, holds_c_near, c, 1, lot="L1")
    stock(db, holds_c_near, c, 9, lot="L2", reserved=9)  # reserved units are not there to sell
    stock(db, holds_a, a, 5)

    found = plan(client, search_body([(a, 2), (b, 1), (c, 1)]))

    assert found["store_count"] == 2
    assert [p["store"]["id"] for p in found["parts"]] == [holds_ab.id, holds_c_near.id]
    first, second = found["parts"]
    assert sorted((i["product_id"], i["quantity"]) for i in first["items"]) == sorted(
        [(a.id, 2), (b.id, 1)]
    )
    assert second["items"] == [{"product_id": c.id, "quantity": 1}]
    assert first["distance_m"] == pytest.approx(300, abs=0.01)
    assert first["store"]["location"] == pytest.approx(at(300))
    assert first["can_deliver"] is False and first["eta_minutes"] == 10


def test_a_quantity_no_store_holds_is_split_across_stores(client, db):
    a = make_product(db)
    near, far = store_at(db, 100), store_at(db, 400)
    stock(db, near, a, 3)
    stock(db, far, a, 4)

    found = plan(client, search_body([(a, 5)]))

    assert [(p["store"]["id"], p["items"]) for p in found["parts"]] == [
        (near.id, [{"product_id": a.id, "quantity": 3}]),
        (far.id, [{"product_id": a.id, "quantity": 2}]),
    ]


def test_no_plan_when_one_store_holds_it_all_or_when_asked_not_to(client, db):
    a, b = make_product(db), make_product(db)
    both = store_at(db, 3000)
    stock(db, both, a, 1)
    stock(db, both, b, 1)
    stock(db, store_at(db, 100), a, 1)
    stock(db, store_at(db, 200), b, 1)

    assert plan(client, search_body([(a, 1), (b, 1)])) is None
    response = client.post(SEARCH, json=search_body([(a, 1), (b, 2)]))
    assert response.json()["split_plan"] is None  # allow_split not asked for


def test_no_plan_when_it_would_take_four_stores(client, db):
    products = [make_product(db) for _ in range(4)]
    for i, product in enumerate(products):
        stock(db, store_at(db, 100 * (i + 1)), product, 1)

    assert plan(client, search_body([(p, 1) for p in products])) is None
    assert plan(client, search_body([(p, 1) for p in products[:3]]))["store_count"] == 3


def test_a_delivery_plan_uses_only_stores_that_deliver_here(client, db):
    a, b = make_product(db), make_product(db)
    pickup_only = store_at(db, 50)
    delivers_a = store_at(db, 500, services=("pickup", "delivery"), zone=ZONE)
    delivers_b = store_at(db, 800, services=("pickup", "delivery"), zone=ZONE)
    stock(db, pickup_only, b, 5)
    stock(db, delivers_a, a, 5)
    stock(db, delivers_b, b, 5)

    found = plan(client, search_body([(a, 1), (b, 1)], fulfillment="delivery"))

    assert [p["store"]["id"] for p in found["parts"]] == [delivers_a.id, delivers_b.id]
    assert all(p["can_deliver"] for p in found["parts"])
    assert all(p["eta_minutes"] > 10 for p in found["parts"])
    anywhere = plan(client, search_body([(a, 1), (b, 1)]))
    assert [p["store"]["id"] for p in anywhere["parts"]] == [pickup_only.id, delivers_a.id]


def test_a_delivery_plan_waits_for_a_courier_where_the_fleet_is_busy(client, db):
    # The fleet's fresh estimate adds its wait to a delivering part's ETA, as search's results
    # count it; a stale one adds nothing.
    a, b = make_product(db), make_product(db)
    busy = store_at(db, 500, services=("pickup", "delivery"), zone=ZONE)
    stale = store_at(db, 800, services=("pickup", "delivery"), zone=ZONE)
    stock(db, busy, a, 5)
    stock(db, stale, b, 5)
    body = search_body([(a, 1), (b, 1)], fulfillment="delivery")
    before = {p["store"]["id"]: p["eta_minutes"] for p in plan(client, body)["parts"]}
    now = clock.now()
    for store, at_ in ((busy, now), (stale, now - timedelta(hours=2))):
        make_fleet_load(db, store, wait_minutes=17.2, at=at_)

    after = {p["store"]["id"]: p["eta_minutes"] for p in plan(client, body)["parts"]}

    assert after == {busy.id: before[busy.id] + 18, stale.id: before[stale.id]}


def test_a_bad_cart_is_refused_as_ever(client, db):
    response = client.post(
        SEARCH,
        json={
            **search_body([]),
            "items": [{"product_id": 2_000_000, "quantity": 1}],
            "allow_split": True,
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_product"
