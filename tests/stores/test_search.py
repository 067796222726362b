"""Store search and the nearby list through the API: what a patient sees, and what is refused."""

import math
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from sqlalchemy import text

from o2o import clock
from o2o.config import get_settings
from o2o.db import get_driver
from o2o.errors import InvalidInput
from stores import cart, search, statements
from stores.models import ProductStockStats
from tests.factories import make_product
from tests.stores.helpers import (
    GEOD,
    HERE,
    NEARBY,
    SEARCH,
    at,
    search_body,
    square_zone,
    stock,
    store_at,
)


def results(client, body) -> list[dict]:
    response = client.post(SEARCH, json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


# --- answers ------------------------------------------------------------------------------------


def test_complete_stores_come_first_nearest_first_then_partial_ones(client, db):
    a, b = make_product(db), make_product(db)
    far_complete = store_at(db, 3000)
    near_complete = store_at(db, 1000)
    nearest_partial = store_at(db, 200)
    nothing = store_at(db, 100)
    for s in (far_complete, near_complete):
        stock(db, s, a, 5)
        stock(db, s, b, 5)
    stock(db, nearest_partial, a, 1)
    stock(db, nothing, make_product(db), 50)

    found = results(client, search_body([(a, 2), (b, 1)], limit=5))

    assert [r["store"]["id"] for r in found] == [
        near_complete.id,
        far_complete.id,
        nearest_partial.id,
    ]
    assert [r["complete"] for r in found] == [True, True, False]
    assert found[0]["missing"] == []
    # One unit of a held, none of b: both lines are short by what the store lacks.
    assert sorted(found[2]["missing"], key=lambda m: m["product_id"]) == sorted(
        [{"product_id": a.id, "quantity_missing": 1}, {"product_id": b.id, "quantity_missing": 1}],
        key=lambda m: m["product_id"],
    )
    assert found[0]["distance_m"] == pytest.approx(1000, abs=0.01)
    assert found[0]["store"] == {
        "id": near_complete.id,
        "name": near_complete.name,
        "location": pytest.approx(at(1000)),
    }


def test_partial_stores_only_fill_what_complete_ones_leave(client, db):
    a = make_product(db)
    complete = [store_at(db, 300), store_at(db, 400)]
    partial = [store_at(db, 50), store_at(db, 100)]
    for s in complete:
        stock(db, s, a, 2)
    for s in partial:
        stock(db, s, a, 1)
    stock(db, store_at(db, 60), a, 0)  # an empty lot is not "part of the cart"

    def found(limit):
        return [r["store"]["id"] for r in results(client, search_body([(a, 2)], limit=limit))]

    assert found(2) == [s.id for s in complete]
    assert found(3) == [s.id for s in complete] + [partial[0].id]
    assert found(5) == [s.id for s in complete + partial]


def test_duplicate_lines_are_added_up(client, db):
    a = make_product(db)
    stock(db, store_at(db, 100), a, 3)
    body = {
        "location": HERE,
        "items": [{"product_id": a.id, "quantity": 2}, {"product_id": a.id, "quantity": 2}],
    }
    [only] = results(client, body)
    assert only["complete"] is False
    assert only["missing"] == [{"product_id": a.id, "quantity_missing": 1}]


def test_reserved_and_soon_expiring_stock_does_not_count(client, db):
    a = make_product(db)
    store = store_at(db, 100, min_shelf_life_days=30)
    stock(db, store, a, 5, reserved=5, lot="reserved")
    stock(db, store, a, 5, days=29, lot="expires-inside-shelf-life")
    stock(db, store, a, 2, reserved=1, days=30, lot="usable")
    [only] = results(client, search_body([(a, 2)]))
    assert only["missing"] == [{"product_id": a.id, "quantity_missing": 1}]


def test_shelf_life_is_counted_in_the_stores_own_day(db):
    # At noon UTC it is already tomorrow on Kiritimati (UTC+14) and still today on Pago Pago
    # (UTC-11): a lot expiring today is past its date only on Kiritimati.
    today = clock.today("UTC")
    noon = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    a = make_product(db)
    kiritimati = store_at(db, 100, timezone="Pacific/Kiritimati", min_shelf_life_days=0)
    pago_pago = store_at(db, 200, timezone="Pacific/Pago_Pago", min_shelf_life_days=0)
    for s in (kiritimati, pago_pago):
        stock(db, s, a, 1, expiry_date=today)
    found = search.search_stores(
        db, lat=HERE["lat"], lon=HERE["lon"], lines=[cart.CartLine(a.id, 1)], now=noon
    )
    assert [m.store_id for m in found] == [pago_pago.id]


def test_inactive_stores_and_stores_beyond_the_radius_are_left_out(client, db):
    a = make_product(db)
    inactive = store_at(db, 100)
    inactive.is_active = False
    far = store_at(db, 6000)
    for s in (inactive, far):
        stock(db, s, a)
    db.flush()
    assert results(client, search_body([(a, 1)], radius_m=5000)) == []
    assert [r["store"]["id"] for r in results(client, search_body([(a, 1)]))] == [far.id]


def test_nearest_is_measured_on_the_spheroid_not_the_sphere(client, db):
    """At 31 N a metre north is shorter on the ellipsoid than on the sphere `<->` uses, a metre
    east longer: the store north is nearer though the sphere puts the east one first."""
    a = make_product(db)
    north = store_at(db, 996.0)
    east = store_at(db, 0, 997.0)
    for s in (north, east):
        stock(db, s, a)
    sphere = db.execute(
        text(
            "SELECT id FROM stores WHERE id IN (:n, :e) ORDER BY location <-> "
            "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography"
        ),
        {"n": north.id, "e": east.id, **HERE},
    ).scalars()
    assert list(sphere) == [east.id, north.id]
    for budget in (None, 1000):  # driven plan, then an index walk
        with mock.patch.object(search, "_walk_budget", return_value=budget):
            found = results(client, search_body([(a, 1)], limit=1))
        assert [r["store"]["id"] for r in found] == [north.id]
        assert found[0]["distance_m"] == pytest.approx(996.0, abs=0.01)


def test_rare_carts_start_from_the_rarest_item_and_common_ones_walk_the_index():
    counts = {1: 500, 2: 480, 3: 9000}  # of 10,000 stores

    def budget(*product_ids):
        query = search._Query(
            params={},
            fulfillment="any",
            lines=[cart.CartLine(p, 1) for p in product_ids],
            store_counts=counts,
            store_total=10_000,
        )
        return search._walk_budget(query, "complete", 5)

    # Two items each held by 5% of stores: a walk would look at ~2,800 stores to find 7 holding
    # both; the 480 holding the rarer one are far fewer.
    assert budget(2, 1, 3) is None
    # Held by 90%: a few steps of the index walk find them.
    assert budget(3) == search.MIN_WALK_BUDGET
    # In between, the walk gets room for three times the stores it expects to need (rounded up
    # to a power of two, as budgets are written into the statement).
    assert budget(1) == 512 >= math.ceil(3 * 7 / 0.05)


def test_stock_counts_stand_in_for_missing_statistics(db):
    a, b = make_product(db), make_product(db)
    for north in (100, 200, 300):
        stock(db, store_at(db, north), a)
    db.add(ProductStockStats(product_id=b.id, store_count=7))
    db.flush()
    lines = [cart.CartLine(a.id, 1), cart.CartLine(b.id, 1), cart.CartLine(a.id, 2)]
    merged, counts, _ = statements.run(db, search._cart_steps(statements.database(db), lines))
    assert merged == [cart.CartLine(a.id, 3), cart.CartLine(b.id, 1)]
    assert counts == {a.id: 3, b.id: 7}


# --- fulfillment, delivery zones, ETA, hours -----------------------------------------------------


def test_fulfillment_filters(client, db):
    a = make_product(db)
    pickup_only = store_at(db, 100, services=["pickup"])
    delivers_here = store_at(db, 200, services=["delivery"], zone=square_zone(half_deg=0.05))
    zone_elsewhere = store_at(
        db, 300, services=["pickup", "delivery"], zone=square_zone(lat=32.5, lon=120.0)
    )
    for s in (pickup_only, delivers_here, zone_elsewhere):
        stock(db, s, a)

    def ids(fulfillment):
        return [
            r["store"]["id"]
            for r in results(client, search_body([(a, 1)], fulfillment=fulfillment))
        ]

    assert ids("pickup") == [pickup_only.id, zone_elsewhere.id]
    assert ids("delivery") == [delivers_here.id]
    # "any": every store that can serve the patient one way or the other.
    assert ids("any") == [pickup_only.id, delivers_here.id, zone_elsewhere.id]


def test_can_deliver_inside_and_outside_a_zone_and_in_a_multipolygon(client, db):
    a = make_product(db)
    here = (HERE["lon"], HERE["lat"])
    far_part = [[[120.0, 32.0], [120.1, 32.0], [120.1, 32.1], [120.0, 32.1], [120.0, 32.0]]]
    near_part = [
        [
            [here[0] - 0.01, here[1] - 0.01],
            [here[0] + 0.01, here[1] - 0.01],
            [here[0] + 0.01, here[1] + 0.01],
            [here[0] - 0.01, here[1] + 0.01],
            [here[0] - 0.01, here[1] - 0.01],
        ]
    ]
    multi = store_at(
        db,
        100,
        services=["delivery"],
        zone={"type": "MultiPolygon", "coordinates": [far_part, near_part]},
    )
    outside = store_at(
        db,
        200,
        services=["pickup", "delivery"],
        zone={"type": "Polygon", "coordinates": far_part},
    )
    for s in (multi, outside):
        stock(db, s, a)

    found = {r["store"]["id"]: r for r in results(client, search_body([(a, 1)]))}
    assert found[multi.id]["can_deliver"] is True
    assert found[outside.id]["can_deliver"] is False
    # Just outside the near square's edge (0.01 deg is about 950 m east at this latitude).
    edge = {"lat": HERE["lat"], "lon": HERE["lon"] + 0.0101}
    found = {r["store"]["id"]: r for r in results(client, search_body([(a, 1)], location=edge))}
    assert multi.id not in found  # delivery only, and not to this point
    assert found[outside.id]["can_deliver"] is False


def test_delivery_is_judged_at_the_delivery_address_and_distance_from_the_patient(client, db):
    a = make_product(db)
    store = store_at(
        db,
        2000,
        services=["delivery"],
        zone=square_zone(lat=at(2000)["lat"], half_deg=0.0135),
        prep_minutes=10,
        courier_speed_kmh=18,
        detour_factor=1.5,
    )
    stock(db, store, a)
    address = at(3000)  # 1 km beyond the store, inside its zone; the patient is outside it
    assert results(client, search_body([(a, 1)], fulfillment="delivery")) == []
    [found] = results(
        client, search_body([(a, 1)], fulfillment="delivery", delivery_location=address)
    )
    assert found["can_deliver"] is True
    assert found["distance_m"] == pytest.approx(2000, abs=0.01)
    # 1 km x 1.5 at 18 km/h = 5 minutes, after 10 minutes of preparation.
    assert found["eta_minutes"] == 15


def test_eta_is_the_pickup_time_when_picking_up(client, db):
    a = make_product(db)
    store = store_at(
        db,
        3000,
        services=["pickup", "delivery"],
        zone=square_zone(half_deg=0.1),
        prep_minutes=12,
    )
    stock(db, store, a)
    [delivered] = results(client, search_body([(a, 1)], fulfillment="any"))
    [picked_up] = results(client, search_body([(a, 1)], fulfillment="pickup"))
    # 3 km x 1.35 at 18 km/h = 13.5 min, rounded up.
    assert delivered["eta_minutes"] == 12 + 14
    assert picked_up["eta_minutes"] == 12
    assert picked_up["can_deliver"] is True


def test_closed_stores_are_flagged_with_their_next_opening(client, db):
    a = make_product(db)
    now = clock.now()
    # Open one hour a week, starting in two days: closed now whatever the time.
    opens = now + timedelta(days=2)
    hours = [
        {
            "weekday": opens.weekday(),
            "opens": f"{opens.hour:02d}:00",
            "closes": f"{(opens.hour + 1) % 24:02d}:00",
        }
    ]
    closed = store_at(db, 100, timezone="UTC", opening_hours=hours)
    always_open = store_at(db, 200)
    for s in (closed, always_open):
        stock(db, s, a)
    found = {r["store"]["id"]: r for r in results(client, search_body([(a, 1)]))}
    assert found[closed.id]["is_open"] is False
    assert found[closed.id]["opens_at"] == opens.replace(
        minute=0, second=0, microsecond=0
    ).isoformat().replace("+00:00", "Z")
    assert found[always_open.id]["is_open"] is True
    assert found[always_open.id]["opens_at"] is None


# --- refusals -------------------------------------------------------------------------------------


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    return response.json()["error"]


def test_controlled_products_are_refused(client, db):
    plain, controlled = make_product(db), make_product(db, controlled=True, name="Morphine 10 mg")
    error = assert_error(
        client.post(SEARCH, json=search_body([(plain, 1), (controlled, 1)])),
        422,
        "controlled_product",
    )
    assert error["details"] == {"product_ids": [controlled.id]}
    assert "Morphine 10 mg" in error["message"]


def test_max_per_order_is_enforced_on_the_merged_quantity(client, db):
    limited = make_product(db, max_per_order=2, name="Codeine syrup")
    body = {
        "location": HERE,
        "items": [
            {"product_id": limited.id, "quantity": 2},
            {"product_id": limited.id, "quantity": 1},
        ],
    }
    error = assert_error(client.post(SEARCH, json=body), 422, "max_per_order_exceeded")
    assert error["details"]["products"] == [
        {"product_id": limited.id, "name": "Codeine syrup", "max_per_order": 2, "quantity": 3}
    ]
    assert "At most 2 of Codeine syrup" in error["message"]
    assert client.post(SEARCH, json=search_body([(limited, 2)])).status_code == 200


@pytest.mark.parametrize("stocked", [True, False], ids=["stores found", "no store found"])
def test_a_cart_is_checked_in_full_when_its_statistics_are_cached(client, db, stocked):
    # The first search caches the products' statistics; later ones check the cart inside the
    # search query, and must still refuse what changed since. When stocked, one store holds the
    # whole cart, so the refusals come from a complete store whose cart check failed.
    a, b = make_product(db), make_product(db)
    if stocked:
        store = store_at(db, 100)
        stock(db, store, a, on_hand=5)
        stock(db, store, b)
    expected = [True] if stocked else []
    found = results(client, search_body([(a, 3), (b, 3)]))
    assert [r["complete"] for r in found] == expected
    a.max_per_order = 2
    db.flush()
    error = assert_error(
        client.post(SEARCH, json=search_body([(a, 3), (b, 3)])), 422, "max_per_order_exceeded"
    )
    assert error["details"]["products"][0]["product_id"] == a.id
    b.controlled = True
    db.flush()
    error = assert_error(
        client.post(SEARCH, json=search_body([(a, 1), (b, 1)])), 422, "controlled_product"
    )
    assert error["details"] == {"product_ids": [b.id]}
    b.controlled = False
    db.flush()
    assert [r["complete"] for r in results(client, search_body([(a, 1), (b, 1)]))] == expected


def test_unknown_products_are_listed(client, db):
    known = make_product(db)
    body = {
        "location": HERE,
        "items": [
            {"product_id": known.id, "quantity": 1},
            {"product_id": 2_000_000_001, "quantity": 1},
            {"product_id": 2_000_000_002, "quantity": 1},
        ],
    }
    error = assert_error(client.post(SEARCH, json=body), 422, "unknown_product")
    assert error["details"] == {"product_ids": [2_000_000_001, 2_000_000_002]}


@pytest.mark.parametrize(
    "item",
    [
        {"quantity": 0},
        {"quantity": -1},
        {"quantity": 1001},
        {"quantity": 10**12},
        {"quantity": 1.5},
        {"quantity": "2"},
        {"quantity": True},
        {"product_id": 0},
        {"product_id": 2**31},
    ],
)
def test_bad_lines_are_refused(client, db, item):
    line = {"product_id": make_product(db).id, "quantity": 1, **item}
    assert_error(
        client.post(SEARCH, json={"location": HERE, "items": [line]}), 422, "invalid_input"
    )


@pytest.mark.parametrize("count", [0, 51])
def test_carts_of_no_line_or_too_many_lines_are_refused(client, db, count):
    product = make_product(db)
    items = [{"product_id": product.id, "quantity": 1}] * count
    assert_error(client.post(SEARCH, json={"location": HERE, "items": items}), 422, "invalid_input")


@pytest.mark.parametrize(
    "location",
    [
        {"lat": 90.5, "lon": 0},
        {"lat": -91, "lon": 0},
        {"lat": 0, "lon": 180.01},
        {"lat": 0},
        "here",
    ],
)
def test_out_of_range_coordinates_are_refused(client, db, location):
    product = make_product(db)
    body = search_body([(product, 1)])
    assert_error(client.post(SEARCH, json={**body, "location": location}), 422, "invalid_input")
    assert_error(
        client.post(SEARCH, json={**body, "delivery_location": location}), 422, "invalid_input"
    )


@pytest.mark.parametrize(
    "params",
    [
        {"lat": 90.5, "lon": 0},
        {"lat": 0, "lon": -180.01},
        {"lat": 0},
        {"lat": "north", "lon": 0},
        {"lat": "nan", "lon": 0},
        {"lat": 0, "lon": "inf"},
    ],
)
def test_nearby_refuses_out_of_range_coordinates(client, params):
    assert_error(client.get(NEARBY, params=params), 422, "invalid_input")


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"fulfillment": "drone"}, "invalid_input"),
        ({"limit": 0}, "invalid_input"),
        ({"limit": 101}, "invalid_input"),
        ({"radius_m": -5}, "invalid_input"),
        ({"radius_m": 50_001}, "invalid_input"),  # the schema states the maximum
        ({"radius_m": 5e-324}, "invalid_input"),  # and the minimum, a metre
        ({"surprise": 1}, "invalid_input"),
    ],
)
def test_bad_options_are_refused(client, db, extra, code):
    body = search_body([(make_product(db), 1)], **extra)
    assert_error(client.post(SEARCH, json=body), 422, code)


def test_the_service_refuses_what_the_api_would(db):
    product = make_product(db)
    with pytest.raises(InvalidInput) as refused:
        search.search_stores(db, lat=91, lon=0, lines=[cart.CartLine(product.id, 1)])
    assert refused.value.code == "invalid_location"
    for quantity in (0, 1001):
        with pytest.raises(InvalidInput) as refused:
            search.search_stores(db, lat=0, lon=0, lines=[cart.CartLine(product.id, quantity)])
        assert refused.value.code == "invalid_quantity"
    with pytest.raises(InvalidInput) as refused:
        cart.validate_cart(db, [cart.CartLine(product.id, 600)] * 2)
    assert refused.value.code == "invalid_quantity"
    with pytest.raises(InvalidInput) as refused:
        cart.validate_cart(db, [])
    assert refused.value.code == "empty_cart"


def test_anyone_may_search_within_a_rate_limit_per_address(client, db, monkeypatch):
    monkeypatch.setattr(get_settings(), "search_rate_limit", "3/minute")
    body = search_body([(make_product(db), 1)])
    for _ in range(3):
        assert client.post(SEARCH, json=body).status_code == 200
    refused = client.post(SEARCH, json=body)
    error = assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert error["details"]["retry_after_seconds"] >= 1


def test_a_refused_search_takes_no_database_connection(client, db, monkeypatch):
    """The limit is counted before the connection is taken: a search refused (or waiting on
    Redis) holds none of the driver pool's few connections."""
    monkeypatch.setattr(get_settings(), "search_rate_limit", "1/minute")
    overrides = client.app.dependency_overrides
    driver = overrides[get_driver]  # the suite's: the test's own connection
    taken = []

    async def counted_driver():
        taken.append(1)
        async for conn in driver():
            yield conn

    monkeypatch.setitem(overrides, get_driver, counted_driver)
    body = search_body([(make_product(db), 1)])
    assert client.post(SEARCH, json=body).status_code == 200
    assert len(taken) == 1
    assert_error(client.post(SEARCH, json=body), 429, "rate_limited")
    assert len(taken) == 1


# --- nearby -------------------------------------------------------------------------------------------


def test_nearby_pages_cover_every_store_once_in_distance_order(client, db):
    offsets = [(150 * math.cos(i), 900 * math.sin(i * 1.7) + 37 * i) for i in range(23)]
    offsets += [(500, 500), (500, 500)]  # two stores at one place: ordered by id
    stores = [(store_at(db, north, east), at(north, east)) for north, east in offsets]
    beyond = store_at(db, 40_000)
    expected = [
        store.id
        for store, point in sorted(
            stores,
            key=lambda sp: (
                GEOD.inv(HERE["lon"], HERE["lat"], sp[1]["lon"], sp[1]["lat"])[2],
                sp[0].id,
            ),
        )
    ]

    seen, cursor, pages = [], None, 0
    while True:
        params = {**HERE, "radius_m": 5000, "limit": 4}
        if cursor:
            params["cursor"] = cursor
        response = client.get(NEARBY, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 4
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["store"]["id"] for item in seen] == expected
    assert beyond.id not in {item["store"]["id"] for item in seen}
    assert pages == math.ceil(len(expected) / 4)
    distances = [item["distance_m"] for item in seen]
    assert distances == sorted(distances)
    first = seen[0]["store"]
    assert set(first) >= {"id", "name", "address", "location", "services", "is_open_now"}
    assert "delivery_zone" not in first and "min_shelf_life_days" not in first


def test_nearby_refuses_foreign_and_broken_cursors(client, db):
    for north in (100, 200, 300):
        store_at(db, north)
    page = client.get(NEARBY, params={**HERE, "limit": 1}).json()
    assert page["next_cursor"]
    moved = {"lat": HERE["lat"] + 0.01, "lon": HERE["lon"], "limit": 1}
    assert_error(
        client.get(NEARBY, params={**moved, "cursor": page["next_cursor"]}), 422, "invalid_cursor"
    )
    for broken in ("not-a-cursor", "W10", page["next_cursor"][:-3]):
        assert_error(
            client.get(NEARBY, params={**HERE, "limit": 1, "cursor": broken}),
            422,
            "invalid_cursor",
        )
    assert_error(client.get(NEARBY, params={**HERE, "radius_m": 60_000}), 422, "invalid_input")
    assert_error(client.get(NEARBY, params={**HERE, "limit": 101}), 422, "invalid_input")


def test_nearby_is_not_read_as_a_store_id(client, db):
    store_at(db, 100)
    response = client.get(NEARBY, params=HERE)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 1
