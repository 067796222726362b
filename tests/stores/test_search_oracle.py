"""POST /search/stores against a brute-force reference written independently here.

Random cities (stores within ~30 km, delivery zones, lots expiring inside the shelf life, lots
fully reserved) and random carts; the reference measures geodesics with pyproj on WGS84, counts
stock from the lots in Python and tests zones with Shapely. Each example runs in a savepoint that
is rolled back. The plan (index walk with a random budget, or driven by the rarest item) is drawn
too, so every plan and the fallback between them must give the reference's answer.
"""

import contextlib
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import MultiPolygon, Point, Polygon, box
from sqlalchemy import insert, text

from o2o import clock
from o2o.config import get_settings
from o2o.db import get_driver, get_session
from o2o.geo import area_element, point_element
from stores import proximity, search
from stores.models import Lot, Product, Store
from tests.async_driver import SyncDriver

API = "/api/v1"
CENTRE = (31.2304, 121.4737)
KM_LAT = 1 / 110.574
KM_LON = 1 / (111.320 * math.cos(math.radians(CENTRE[0])))
TOLERANCE_M = 0.01
GEOD = Geod(ellps="WGS84")
TIMEZONES = ["Asia/Shanghai", "UTC", "America/Los_Angeles", "Pacific/Kiritimati"]


@dataclass
class LotSpec:
    product: int  # index into the example's products
    expires_in_days: int
    on_hand: int
    reserved: int


@dataclass
class StoreSpec:
    lat: float
    lon: float
    active: bool
    offers_pickup: bool
    offers_delivery: bool
    zone: Polygon | MultiPolygon | None
    timezone: str
    min_shelf_life_days: int
    prep_minutes: int
    courier_speed_kmh: float
    detour_factor: float
    lots: list[LotSpec] = field(default_factory=list)


def offset(km_north: float, km_east: float) -> tuple[float, float]:
    return CENTRE[0] + km_north * KM_LAT, CENTRE[1] + km_east * KM_LON


km = st.floats(-15, 15, allow_nan=False)


@st.composite
def zones(draw, lat: float, lon: float):
    kind = draw(st.sampled_from(["none", "square", "multi"]))
    if kind == "none":
        return None
    half = draw(st.floats(0.3, 8)) * KM_LAT
    dy, dx = draw(st.floats(-3, 3)) * KM_LAT, draw(st.floats(-3, 3)) * KM_LON
    first = box(lon + dx - half, lat + dy - half, lon + dx + half, lat + dy + half)
    if kind == "square":
        return first
    # A second square east of the first, with a gap: a valid MultiPolygon.
    gap = draw(st.floats(0.2, 5)) * KM_LON
    left = lon + dx + half + gap
    return MultiPolygon([first, box(left, lat + dy - half, left + 2 * half, lat + dy + half)])


@st.composite
def stores(draw, n_products: int):
    lat, lon = offset(draw(km), draw(km))
    lots = draw(
        st.lists(
            st.builds(
                lambda product, days, on_hand, reserved_share: LotSpec(
                    product, days, on_hand, round(on_hand * reserved_share)
                ),
                st.integers(0, n_products - 1),
                # Around the shelf life (0..60 days): some lots are too close to expiry.
                st.integers(-5, 120),
                st.integers(0, 6),
                st.sampled_from([0, 0, 0, 0.5, 1]),
            ),
            max_size=3 * n_products,
        )
    )
    return StoreSpec(
        lat=lat,
        lon=lon,
        active=draw(st.sampled_from([True, True, True, False])),
        offers_pickup=draw(st.sampled_from([True, True, True, False])),
        offers_delivery=draw(st.booleans()),
        zone=draw(zones(lat, lon)),
        timezone=draw(st.sampled_from(TIMEZONES)),
        min_shelf_life_days=draw(st.integers(0, 60)),
        prep_minutes=draw(st.integers(0, 30)),
        courier_speed_kmh=draw(st.sampled_from([12.0, 18.0, 25.5])),
        detour_factor=draw(st.sampled_from([1.0, 1.35, 1.7])),
        lots=lots,
    )


@st.composite
def scenarios(draw):
    n_products = draw(st.integers(1, 5))
    city = draw(st.lists(stores(n_products), min_size=1, max_size=12))
    cart_products = draw(st.lists(st.integers(0, n_products - 1), min_size=1, max_size=4))
    # Repeated products are separate lines the search must add up.
    cart = [(p, draw(st.integers(1, 5))) for p in cart_products]
    location = offset(draw(km), draw(km))
    delivery = draw(st.none() | st.tuples(km, km).map(lambda d: offset(*d)))
    return {
        "n_products": n_products,
        "stores": city,
        "cart": cart,
        "location": location,
        "delivery": delivery,
        "fulfillment": draw(st.sampled_from(["any", "pickup", "delivery"])),
        "limit": draw(st.integers(1, 6)),
        "radius_m": draw(st.none() | st.floats(500, 25_000)),
        # None: the planner decides; 0: driven plan; n: an index walk with budget n.
        "budget": draw(st.none() | st.just(0) | st.integers(1, 6) | st.just(1000)),
        "bound": draw(st.sampled_from([proximity.SPHEROID_BOUND, 0.3])),
    }


def build(db, scenario, now: datetime) -> tuple[list[int], list[int]]:
    """Insert the scenario's products, stores and lots, each lot expiring a number of days after
    its store's local day at `now`; return their ids."""
    product_ids = list(
        db.scalars(
            insert(Product).returning(Product.id),
            [
                {
                    "name": f"Oracle product {i}",
                    # Distinct medicines: the reference knows nothing of equivalents.
                    "generic_name": f"oracle {i}",
                    "strength": "1 mg",
                    "dosage_form": "tablet",
                    "pack_size": 10,
                    "gtin": f"{i:014d}",
                }
                for i in range(scenario["n_products"])
            ],
        )
    )
    store_ids = []
    for n, spec in enumerate(scenario["stores"]):
        store = Store(
            name=f"Oracle store {n}",
            address="Oracle Road",
            location=point_element(spec.lat, spec.lon),
            timezone=spec.timezone,
            opening_hours=None,
            offers_pickup=spec.offers_pickup,
            offers_delivery=spec.offers_delivery,
            delivery_zone=area_element(spec.zone) if spec.zone is not None else None,
            min_shelf_life_days=spec.min_shelf_life_days,
            prep_minutes=spec.prep_minutes,
            courier_speed_kmh=spec.courier_speed_kmh,
            detour_factor=spec.detour_factor,
            is_active=spec.active,
        )
        db.add(store)
        db.flush()
        store_ids.append(store.id)
        if spec.lots:
            db.execute(
                insert(Lot),
                [
                    {
                        "store_id": store.id,
                        "product_id": product_ids[lot.product],
                        "lot_number": f"L{i}",
                        "expiry_date": clock.today(spec.timezone, at=now)
                        + timedelta(days=lot.expires_in_days),
                        "on_hand": lot.on_hand,
                        "reserved": lot.reserved,
                        "price_minor": 100,
                        "currency": "CNY",
                    }
                    for i, lot in enumerate(spec.lots)
                ],
            )
    db.flush()
    return product_ids, store_ids


@dataclass
class Expected:
    store_id: int
    distance_m: float
    complete: bool
    missing: dict[int, int]
    can_deliver: bool
    eta_minutes: int


def reference(scenario, product_ids, store_ids, now: datetime) -> dict[int, Expected]:
    """Every store the search may return, with what the reference says about it."""
    cart: dict[int, int] = {}
    for product, quantity in scenario["cart"]:
        cart[product_ids[product]] = cart.get(product_ids[product], 0) + quantity
    lat, lon = scenario["location"]
    d_lat, d_lon = scenario["delivery"] or scenario["location"]
    radius = scenario["radius_m"] or get_settings().search_max_radius_m
    eligible = {}
    for store_id, spec in zip(store_ids, scenario["stores"], strict=True):
        distance = GEOD.inv(lon, lat, spec.lon, spec.lat)[2]
        if not spec.active or distance > radius:
            continue
        in_zone = spec.zone is not None and spec.zone.covers(Point(d_lon, d_lat))
        can_deliver = spec.offers_delivery and in_zone
        serves = {
            "pickup": spec.offers_pickup,
            "delivery": can_deliver,
            "any": spec.offers_pickup or can_deliver,
        }[scenario["fulfillment"]]
        if not serves:
            continue
        # The store counts shelf life from its own day, which may not be the UTC day.
        today = clock.today(spec.timezone, at=now)
        first_sellable = today + timedelta(days=spec.min_shelf_life_days)
        available = dict.fromkeys(cart, 0)
        for lot in spec.lots:
            expiry = today + timedelta(days=lot.expires_in_days)
            pid = product_ids[lot.product]
            if pid in cart and expiry >= first_sellable:
                available[pid] += lot.on_hand - lot.reserved
        missing = {p: q - available[p] for p, q in cart.items() if available[p] < q}
        if missing and not any(available.values()):
            continue  # holds nothing of the cart
        if can_deliver and scenario["fulfillment"] != "pickup":
            to_door = GEOD.inv(spec.lon, spec.lat, d_lon, d_lat)[2]
            travel = to_door * spec.detour_factor / (spec.courier_speed_kmh * 1000 / 60)
            eta = spec.prep_minutes + math.ceil(round(travel, 9))
        else:
            eta = spec.prep_minutes
        eligible[store_id] = Expected(store_id, distance, not missing, missing, can_deliver, eta)
    return eligible


def check(results: list[dict], eligible: dict[int, Expected], limit: int) -> None:
    complete = sorted((e for e in eligible.values() if e.complete), key=lambda e: e.distance_m)
    partial = sorted((e for e in eligible.values() if not e.complete), key=lambda e: e.distance_m)
    want_complete = min(limit, len(complete))
    want_partial = min(limit - want_complete, len(partial))
    assert [r["complete"] for r in results] == [True] * want_complete + [False] * want_partial
    ids = [r["store"]["id"] for r in results]
    assert len(set(ids)) == len(ids)
    for group, found in ((complete, results[:want_complete]), (partial, results[want_complete:])):
        for rank, result in enumerate(found):
            expected = eligible.get(result["store"]["id"])
            # The store belongs to this group, at its own distance ...
            assert expected is not None and expected.complete == result["complete"]
            assert abs(result["distance_m"] - expected.distance_m) <= TOLERANCE_M
            # ... and at the rank the reference gives that distance (ties may swap stores).
            assert abs(result["distance_m"] - group[rank].distance_m) <= TOLERANCE_M
            missing = {m["product_id"]: m["quantity_missing"] for m in result["missing"]}
            assert missing == expected.missing
            assert result["can_deliver"] == expected.can_deliver
            assert result["eta_minutes"] == expected.eta_minutes


@pytest.fixture
def search_client(app, db, monkeypatch):
    """A client whose requests use the test's session without committing it (no savepoints
    released), so each example can be rolled back."""

    def _session():
        yield db

    async def _driver():
        yield SyncDriver(db)

    app.dependency_overrides[get_session] = _session
    app.dependency_overrides[get_driver] = _driver
    monkeypatch.setattr(get_settings(), "search_rate_limit", "100000/minute")
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def _local_dates(now: datetime) -> list[date]:
    return [clock.today(tz, at=now) for tz in TIMEZONES]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_search_matches_the_brute_force_reference(search_client, db, scenario):
    savepoint = db.begin_nested()
    try:
        before = clock.now()
        product_ids, store_ids = build(db, scenario, before)
        body = {
            "location": dict(zip(("lat", "lon"), scenario["location"], strict=True)),
            "items": [{"product_id": product_ids[p], "quantity": q} for p, q in scenario["cart"]],
            "fulfillment": scenario["fulfillment"],
            "limit": scenario["limit"],
        }
        if scenario["radius_m"] is not None:
            body["radius_m"] = scenario["radius_m"]
        if scenario["delivery"] is not None:
            body["delivery_location"] = dict(zip(("lat", "lon"), scenario["delivery"], strict=True))
        budget = scenario["budget"]
        plan = (
            contextlib.nullcontext()
            if budget is None
            else mock.patch.object(search, "_walk_budget", return_value=budget or None)
        )
        with plan, mock.patch.object(proximity, "SPHEROID_BOUND", scenario["bound"]):
            response = search_client.post(f"{API}/search/stores", json=body)
        after = clock.now()
        # A day that ends during the request moves the shelf-life line: not this test's business.
        assume(_local_dates(before) == _local_dates(after))
        assert response.status_code == 200, response.text
        eligible = reference(scenario, product_ids, store_ids, before)
        check(response.json()["results"], eligible, scenario["limit"])
    finally:
        savepoint.rollback()
        db.expunge_all()


def test_reference_geodesic_agrees_with_postgis(db):
    """The tolerance above is about millimetres: both sides measure WGS84 geodesics."""
    here, there = offset(0, 0), offset(12.3, -7.9)
    postgis = db.scalar(
        text(
            "SELECT ST_Distance(ST_SetSRID(ST_MakePoint(:lon1, :lat1), 4326)::geography, "
            "ST_SetSRID(ST_MakePoint(:lon2, :lat2), 4326)::geography)"
        ),
        {"lat1": here[0], "lon1": here[1], "lat2": there[0], "lon2": there[1]},
    )
    assert postgis == pytest.approx(GEOD.inv(here[1], here[0], there[1], there[0])[2], abs=1e-3)
