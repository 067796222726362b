"""No 500 for any input: text PostgreSQL cannot store is refused where it enters, ids past their
column's range are refused before any lookup, and points at the poles and on the antimeridian are
ordinary points. Every refusal is a 4xx in the one error shape and leaves the data as it was."""

import io
import json
import math
import uuid

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from o2o.orders.models import Order
from o2o.users.models import Role
from o2o.webhooks.models import WebhookEndpoint
from stores.cli import app as stores_cli
from stores.models import Product, Store
from tests.factories import (
    SHANGHAI,
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    payment_app,
)
from tests.orders.helpers import order_body
from tests.stores.helpers import product_body, store_body

API = "/api/v1"
NUL = "\u0000"


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def assert_refused_text(response, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == field
    assert field in error["message"]


@pytest.fixture
def admin(db):
    return make_user(db, role=Role.ADMIN)


@pytest.fixture
def patient(db):
    return make_user(db, role=Role.PATIENT)


# --- text the database cannot store -------------------------------------------------------------


@pytest.mark.parametrize("name", [f"a{NUL}b", "\ud800 lone surrogate"])
@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=utf-8", "application/x+json"]
)
def test_a_product_name_the_database_cannot_store_is_refused(client, db, admin, name, content_type):
    before = count(db, Product)
    # Sent as JSON text with escapes, as a client would: json.dumps writes \u0000 and \ud800;
    # under every type the API reads as JSON.
    r = client.post(
        f"{API}/products",
        content=json.dumps(product_body(name=name)),
        headers={**auth(admin), "Content-Type": content_type},
    )
    assert_refused_text(r, "body.name")
    assert count(db, Product) == before


def test_a_store_name_with_a_nul_is_refused_and_nothing_is_written(client, db, admin):
    before = count(db, Store)
    r = client.post(f"{API}/stores", json=store_body(name=f"n{NUL}x"), headers=auth(admin))
    assert_refused_text(r, "body.name")
    assert count(db, Store) == before


def test_a_nul_deep_in_a_body_names_its_field(client, db, admin):
    body = store_body()
    body["opening_hours"] = [{"weekday": 0, "opens": f"08{NUL}00", "closes": "22:00"}]
    r = client.post(f"{API}/stores", json=body, headers=auth(admin))
    assert_refused_text(r, "body.opening_hours.0.opens")


def test_a_delivery_address_with_a_nul_places_no_order(client, db, patient):
    store = make_store(db, zone_half_side_m=3000)
    product = make_product(db)
    make_lot(db, store, product, on_hand=5)
    body = order_body([(product.id, 1)], fulfillment="delivery")
    body["delivery_address"] = {
        "location": {"lat": SHANGHAI[0], "lon": SHANGHAI[1]},
        "text": f"Room{NUL} 1",
    }
    r = client.post(
        f"{API}/orders", json=body, headers={**auth(patient), "Idempotency-Key": str(uuid.uuid4())}
    )
    assert_refused_text(r, "body.delivery_address.text")
    assert count(db, Order) == 0


def test_a_query_parameter_with_a_nul_is_refused(client, db):
    r = client.get(f"{API}/products", params={"q": f"\U000668972{NUL}Z"})
    assert_refused_text(r, "query.q")


def test_a_stored_header_with_a_nul_is_refused(client, db, patient):
    store = make_store(db)
    product = make_product(db)
    make_lot(db, store, product, on_hand=5)
    # The key is stored with the first answer: it is text like any other the platform keeps.
    r = client.post(
        f"{API}/orders",
        json=order_body([(product.id, 1)]),
        headers={**auth(patient), "Idempotency-Key": f"key{NUL}1"},
    )
    assert_refused_text(r, "header.idempotency-key")
    assert count(db, Order) == 0


def test_form_fields_with_a_nul_are_refused(client, db):
    r = client.post(f"{API}/auth/token", data={"username": f"a{NUL}b", "password": "x" * 12})
    assert_refused_text(r, "form.username")


def test_a_multipart_field_with_a_nul_is_refused(client, db, patient):
    r = client.post(
        f"{API}/prescriptions",
        data={"order_id": str(uuid.uuid4()), "patient_name": f"Li{NUL}Lei", "id_number": "x"},
        files={"attachment": ("scan.png", io.BytesIO(b"\x89PNG\r\n\x1a\n"), "image/png")},
        headers=auth(patient),
    )
    assert_refused_text(r, "form.patient_name")


def test_a_console_form_with_a_nul_is_refused_not_a_server_error(client, db):
    page = client.get("/console/login")
    assert page.status_code == 200
    r = client.post("/console/login", data={"email": f"a{NUL}@example.com", "password": "x"})
    assert 400 <= r.status_code < 500


def test_a_geojson_import_with_a_nul_is_refused_before_the_database(db, tmp_path, monkeypatch):
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [SHANGHAI[1], SHANGHAI[0]]},
                "properties": {"name": f"Bad{NUL}name", "address": "1 Road"},
            }
        ],
    }
    path = tmp_path / "stores.geojson"
    path.write_text(json.dumps(collection))
    result = CliRunner().invoke(stores_cli, ["import-stores", str(path)])
    assert result.exit_code != 0
    said = " ".join(result.output.split())  # as printed, wrapped to the terminal's width
    assert "features.0.properties.name" in said.replace(" ", "") and "NUL" in said


def test_a_lot_csv_with_a_nul_is_refused_naming_the_line(db):
    from stores import lot_import

    store = make_store(db)
    product = make_product(db)
    csv = (
        ",".join(lot_import.CSV_COLUMNS)
        + "\n"
        + f"{store.id},{product.gtin},L{NUL}1,2030-01-01,5,100,CNY\n"
    ).encode()
    with pytest.raises(lot_import.InvalidInput) as refused:
        lot_import.import_lots_csv(db, io.BytesIO(csv))
    assert refused.value.code == "invalid_csv"
    assert "line 2" in refused.value.message
    assert db.scalar(text("SELECT count(*) FROM lots WHERE store_id = :s"), {"s": store.id}) == 0


# --- ids past their column's range ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/admin/webhooks/8718836282491"),
        ("GET", "/admin/couriers/46295409869371398422528"),
        ("GET", "/stores/2147483648"),
        ("GET", "/products/2147483648"),
        ("POST", "/admin/doctor-keys/2147483648/approve"),
    ],
)
def test_an_id_past_its_columns_range_is_invalid_input(client, db, admin, method, path):
    r = client.request(method, f"{API}{path}", headers=auth(admin))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.PHARMACIST])
@pytest.mark.parametrize(
    "path",
    ["/sla/report?store_id=2147483648", "/orders?store_id=2147483648"],
)
def test_an_id_in_a_query_past_its_columns_range_is_invalid_input(client, db, role, path):
    r = client.get(f"{API}{path}", headers=auth(make_user(db, role=role)))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


def test_an_id_in_range_that_names_nothing_is_404(client, db, admin):
    before = count(db, WebhookEndpoint)
    assert client.delete(f"{API}/admin/webhooks/2147483647", headers=auth(admin)).status_code == 404
    assert client.get(f"{API}/admin/couriers/2147483647", headers=auth(admin)).status_code == 404
    assert count(db, WebhookEndpoint) == before


# --- the poles and the antimeridian ------------------------------------------------------------

EDGES = [
    (90.0, 2.220446049250313e-16),
    (90.0, 0.0),
    (-90.0, 0.0),
    (0.0, 180.0),
    (0.0, -180.0),
    # A float's width from the edge (found by fuzzing): the index misorders these too.
    (-89.99999999999999, 2.3724707775842545e-194),
    (45.0, 179.99999999999997),
    # Tiny coordinates next to stores at (0, 0) (found by fuzzing as the patient).
    (2.4013266201621016e-212, -2.4135552643508313e-28),
]


@pytest.mark.parametrize(("lat", "lon"), EDGES)
def test_nearby_and_search_answer_at_the_poles_and_the_antimeridian(client, db, lat, lon):
    far = make_store(db)  # in Shanghai: far from every edge, but inside the world
    product = make_product(db)
    make_lot(db, far, product, on_hand=3)
    r = client.get(f"{API}/stores/nearby", params={"lat": lat, "lon": lon})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []  # 50 km from a pole or the date line, Shanghai is not
    r = client.post(
        f"{API}/search/stores",
        json={
            "location": {"lat": lat, "lon": lon},
            "items": [{"product_id": product.id, "quantity": 1}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"] == []


def twins(lat: float, lon: float) -> list[tuple[float, float]]:
    """The same point (or one a float's width away) written other ways: a pole at other
    longitudes, lon 180 as -180."""
    if abs(lat) > 89:
        return [(math.copysign(90.0, lat), 0.0), (math.copysign(90.0, lat), 121.0)]
    if abs(lon) < 1:
        return [(0.0, 0.0)] * 4
    return [(lat, -math.copysign(180.0, lon))]


@pytest.mark.parametrize(("lat", "lon"), EDGES)
def test_a_store_on_the_searched_point_written_another_way_is_found(client, db, lat, lon):
    # PostGIS' index can misorder such a pair; the walk is then run without it.
    product = make_product(db)
    stores = [make_store(db, at=at) for at in twins(lat, lon)]
    for store in stores:
        make_lot(db, store, product, on_hand=2)
    r = client.get(f"{API}/stores/nearby", params={"lat": lat, "lon": lon, "radius_m": 5000})
    assert r.status_code == 200, r.text
    found = r.json()["items"]
    assert sorted(item["store"]["id"] for item in found) == sorted(s.id for s in stores)
    assert all(item["distance_m"] < 1 for item in found)
    r = client.post(
        f"{API}/search/stores",
        json={
            "location": {"lat": lat, "lon": lon},
            "items": [{"product_id": product.id, "quantity": 1}],
            "radius_m": 5000,
        },
    )
    assert r.status_code == 200, r.text
    assert sorted(x["store"]["id"] for x in r.json()["results"]) == sorted(s.id for s in stores)
    # A split plan walks the index too: three units when each store holds two need two stores.
    r = client.post(
        f"{API}/search/stores",
        json={
            "location": {"lat": lat, "lon": lon},
            "items": [{"product_id": product.id, "quantity": 3 if len(stores) > 1 else 2}],
            "radius_m": 5000,
            "allow_split": True,
        },
    )
    assert r.status_code == 200, r.text
    plan = r.json()["split_plan"]
    if len(stores) > 1:
        assert plan["store_count"] == 2
        assert all(part["distance_m"] < 1 for part in plan["parts"])
    else:
        assert plan is None  # the one store holds it all


@pytest.mark.parametrize(("lat", "lon"), EDGES)
def test_an_order_is_placed_next_to_stores_on_the_patients_point_written_another_way(
    client, db, patient, lat, lon
):
    # With two stores or more on the point, the cart (three units, two at each) is split.
    payment_app(db)
    product = make_product(db)
    stores = {s.id: s for s in (make_store(db, at=at) for at in twins(lat, lon))}
    lots = {store_id: make_lot(db, store, product, on_hand=2) for store_id, store in stores.items()}
    units = 3 if len(stores) > 1 else 1
    request = {
        "json": {**order_body([(product.id, units)], at=(lat, lon)), "allow_split": True},
        "headers": {**auth(patient), "Idempotency-Key": f"edge-{lat}-{lon}"},
    }
    r = client.post(f"{API}/orders", **request)
    assert r.status_code == 201, r.text
    placed = r.json()
    parts = placed.get("parts", [placed])
    assert len(parts) == (2 if len(stores) > 1 else 1)
    assert {part["store"]["id"] for part in parts} <= set(stores)
    assert count(db, Order) == len(parts)
    reserved = [(db.refresh(lot), lot.reserved)[1] for lot in lots.values()]
    assert sum(reserved) == units and max(reserved) <= 2


def test_a_zone_across_the_antimeridian_and_couriers_at_the_edges(client, db, admin):
    zone = {
        "type": "Polygon",
        "coordinates": [[[179.9, -0.1], [180.0, -0.1], [180.0, 0.1], [179.9, 0.1], [179.9, -0.1]]],
    }
    body = store_body(location={"lat": 0.0, "lon": 179.95}, delivery_zone=zone, timezone="UTC")
    r = client.post(f"{API}/stores", json=body, headers=auth(admin))
    assert r.status_code == 201, r.text
    courier = make_user(db, role=Role.COURIER)
    for lat, lon in EDGES:
        r = client.put(
            f"{API}/couriers/me/location", json={"lat": lat, "lon": lon}, headers=auth(courier)
        )
        assert r.status_code < 500, r.text


@pytest.mark.parametrize(("lat", "lon"), EDGES)
def test_an_order_dropped_off_at_an_edge_is_answered_not_a_server_error(
    client, db, patient, lat, lon
):
    store = make_store(db, zone_half_side_m=3000)
    product = make_product(db)
    make_lot(db, store, product, on_hand=5)
    body = order_body([(product.id, 1)], fulfillment="delivery")
    body["delivery_address"] = {"location": {"lat": lat, "lon": lon}, "text": "The edge"}
    r = client.post(
        f"{API}/orders", json=body, headers={**auth(patient), "Idempotency-Key": str(uuid.uuid4())}
    )
    assert r.status_code < 500, r.text
    assert "error" in r.json() or r.json()["fulfillment"] == "pickup"


def test_a_malformed_multipart_body_is_refused_not_a_server_error(client, db, patient):
    boundary = "0d37f771f3609e9baf6be26654101f5f"
    r = client.post(
        f"{API}/prescriptions",
        content=f"--{boundary}\r\nTrue--{boundary}--\r\n".encode(),
        headers={**auth(patient), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_a_multipart_body_over_the_fields_limit_is_still_refused(client, db, patient):
    # The edge's own reading of a form must not lift the limits the handler parses it with.
    fields = {f"extra{i}": "x" for i in range(20)}
    r = client.post(
        f"{API}/prescriptions", data=fields, files={"a": ("a.txt", b"x")}, headers=auth(patient)
    )
    assert 400 <= r.status_code < 500, r.text
