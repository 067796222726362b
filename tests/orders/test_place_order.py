"""POST /orders: routing, FEFO reservation, the response shape, and bad input changing nothing."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from o2o import clock
from o2o.orders.models import LotAllocation, Order
from o2o.users.models import Role
from tests.factories import (
    STORE_ZONE,
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    pay_through,
)
from tests.orders.helpers import HOME, order_body, order_count, stock

URL = "/api/v1/orders"
ORDER_KEYS = {
    "id",
    "status",
    "fulfillment",
    "store",
    "routing_reason",
    "lines",
    "delivery_fee_minor",
    "compensation_minor",
    "total_minor",
    "currency",
    "created_at",
    "released_at",
    "sla_deadline",
    "prescription_id",
    "pickup_code",
    "delivery_code",
    "timeline",
    "payment",
    "refunds",
}


@pytest.fixture
def patient(db):
    return make_user(db, role=Role.PATIENT)


@pytest.fixture
def store(db):
    """500 m north of the patient, delivering within a 3 km square around itself."""
    return make_store(db, at=offset(500, 0), zone_half_side_m=3000, name="Riverside Pharmacy")


@pytest.fixture
def paracetamol(db):
    return make_product(db, name="Paracetamol 500 mg")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_pickup_order_reserves_stock_and_answers_in_the_documented_shape(
    client, db, patient, store, paracetamol
):
    lot = make_lot(db, store, paracetamol, on_hand=10, price_minor=1850)
    r = client.post(URL, json=order_body([(paracetamol.id, 2)]), headers=auth(patient))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= ORDER_KEYS
    # Placed: the stock is held until the payment deadline, 15 minutes by default.
    assert body["status"] == "awaiting_payment"
    payment = body["payment"]
    assert set(payment) >= {"id", "amount_minor", "currency", "due_at", "status", "method"}
    assert (payment["amount_minor"], payment["currency"]) == (3700, "CNY")
    assert (payment["status"], payment["method"]) == ("pending", "online")
    assert ts(payment["due_at"]) - ts(body["created_at"]) == timedelta(minutes=15)
    assert body["hold_expires_at"] == payment["due_at"] and body["released_at"] is None
    assert body["refunds"] == []
    assert stock(db, lot) == (10, 2)
    # The payment app reports the capture: the order is released.
    paid = pay_through(client, db, body["id"])
    assert paid.status_code == 200, paid.text
    assert paid.json()["applied"] is True and paid.json()["payment_status"] == "captured"
    body = client.get(f"{URL}/{body['id']}", headers=auth(patient)).json()
    assert body["status"] == "released"
    assert body["payment"]["status"] == "captured" and body["payment"]["captured_minor"] == 3700
    assert body["fulfillment"] == "pickup"
    assert body["store"] == {"id": store.id, "name": "Riverside Pharmacy"}
    assert body["routing_reason"].startswith("Pickup at Riverside Pharmacy, 500 m away")
    assert body["lines"] == [
        {
            "product_id": paracetamol.id,
            "quantity": 2,
            "price_minor": 1850,
            # Over the counter: an equivalent may fill it (the default); none did.
            "requested_product_id": None,
            "substitution": "allowed",
            "substitution_reason": None,
        }
    ]
    assert (body["delivery_fee_minor"], body["compensation_minor"]) == (0, 0)
    assert body["total_minor"] == 3700 and body["currency"] == "CNY"
    assert body["sla_deadline"] is None and body["prescription_id"] is None
    assert body["released_at"] is not None
    assert len(body["pickup_code"]) == 6 and body["pickup_code"].isdigit()
    assert [e["status"] for e in body["timeline"]] == ["awaiting_payment", "released"]
    assert body["hold_expires_at"] is None
    assert stock(db, lot) == (10, 2)


def test_delivery_inside_the_zone_adds_the_fee_and_a_two_hour_deadline(
    client, db, patient, store, paracetamol
):
    make_lot(db, store, paracetamol, on_hand=5, price_minor=1000)
    body = order_body([(paracetamol.id, 1)], fulfillment="delivery", address_at=offset(1500, 300))
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["fulfillment"] == "delivery"
    assert order["routing_reason"].startswith(
        "Delivery from Riverside Pharmacy: you are inside its delivery zone, about "
    )
    assert order["delivery_fee_minor"] == 500 and order["total_minor"] == 1500
    assert order["payment"]["amount_minor"] == 1500
    # The two hours run from the release, that is from the payment.
    assert order["sla_deadline"] is None
    assert pay_through(client, db, order["id"]).status_code == 200
    order = client.get(f"{URL}/{order['id']}", headers=auth(patient)).json()
    assert ts(order["sla_deadline"]) - ts(order["released_at"]) == timedelta(minutes=120)
    assert order["delivery_address"]["text"] == "Room 501, 8 Example Rd"


def test_auto_chooses_delivery_when_the_store_can_deliver_in_time(
    client, db, patient, store, paracetamol
):
    make_lot(db, store, paracetamol)
    body = order_body([(paracetamol.id, 1)], fulfillment="auto", address_at=offset(800, 0))
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 201, r.text
    assert r.json()["fulfillment"] == "delivery"


def test_auto_outside_every_zone_falls_back_to_pickup_and_says_why(
    client, db, patient, store, paracetamol
):
    make_lot(db, store, paracetamol)
    far_address = offset(20_000, 0)
    body = order_body([(paracetamol.id, 1)], fulfillment="auto", address_at=far_address)
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["fulfillment"] == "pickup"
    assert "delivers to your address" in order["routing_reason"]
    assert order["delivery_fee_minor"] == 0 and order["sla_deadline"] is None


def test_an_impossible_delivery_is_refused_with_the_pickup_alternative_and_reserves_nothing(
    client, db, patient, store, paracetamol
):
    lot = make_lot(db, store, paracetamol)
    body = order_body([(paracetamol.id, 1)], fulfillment="delivery", address_at=offset(20_000, 0))
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "delivery_unavailable"
    assert error["details"]["pickup_alternative"]["store"]["id"] == store.id
    assert stock(db, lot) == (10, 0)
    assert order_count(db) == 0


def test_a_slow_delivery_over_the_sla_is_refused(client, db, patient, paracetamol):
    # 2 km/h couriers: even a short trip takes longer than two hours.
    slow = make_store(db, at=offset(500, 0), zone_half_side_m=8000, courier_speed_kmh=2)
    make_lot(db, slow, paracetamol)
    body = order_body([(paracetamol.id, 1)], fulfillment="delivery", address_at=offset(6000, 0))
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "delivery_unavailable"
    assert "120-minute promise" in r.json()["error"]["details"]["reason"]


def test_prescription_items_wait_for_a_prescription_holding_the_stock(client, db, patient, store):
    rx = make_product(db, name="Amoxicillin", rx_only=True)
    lot = make_lot(db, store, rx)
    r = client.post(URL, json=order_body([(rx.id, 1)]), headers=auth(patient))
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "awaiting_payment"
    # A prescription is requested only once the order is paid; then the 24-hour wait starts.
    assert pay_through(client, db, order["id"]).status_code == 200
    order = client.get(f"{URL}/{order['id']}", headers=auth(patient)).json()
    assert order["status"] == "awaiting_prescription"
    assert order["released_at"] is None and order["sla_deadline"] is None
    held = ts(order["hold_expires_at"]) - ts(order["payment"]["captured_at"])
    assert held == timedelta(hours=24)
    assert stock(db, lot) == (10, 1)


def test_fefo_takes_the_earliest_fresh_lot_and_skips_lots_inside_the_shelf_life(
    client, db, patient, store, paracetamol
):
    too_close = make_lot(db, store, paracetamol, on_hand=50, days=10)
    later = make_lot(db, store, paracetamol, on_hand=5, days=300)
    sooner = make_lot(db, store, paracetamol, on_hand=3, days=90)
    r = client.post(URL, json=order_body([(paracetamol.id, 4)]), headers=auth(patient))
    assert r.status_code == 201, r.text
    allocations = dict(db.execute(select(LotAllocation.lot_id, LotAllocation.quantity)).all())
    assert allocations == {sooner.id: 3, later.id: 1}
    assert stock(db, too_close) == (50, 0)


def test_the_store_asked_for_is_used_even_when_another_is_nearer(
    client, db, patient, store, paracetamol
):
    farther = make_store(db, at=offset(0, 2000), name="Hillside Pharmacy")
    make_lot(db, store, paracetamol)
    make_lot(db, farther, paracetamol)
    r = client.post(
        URL, json=order_body([(paracetamol.id, 1)], store_id=farther.id), headers=auth(patient)
    )
    assert r.status_code == 201, r.text
    assert r.json()["store"]["id"] == farther.id
    assert "the pharmacy you chose" in r.json()["routing_reason"]


def test_repeated_products_are_one_line(client, db, patient, store, paracetamol):
    make_lot(db, store, paracetamol)
    body = order_body([(paracetamol.id, 1), (paracetamol.id, 2)])
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 201, r.text
    assert [
        (line["product_id"], line["quantity"], line["price_minor"]) for line in r.json()["lines"]
    ] == [(paracetamol.id, 3, 1850)]


def test_not_enough_stock_anywhere_is_a_409_naming_every_missing_item(
    client, db, patient, store, paracetamol
):
    ibuprofen = make_product(db)
    lot_a = make_lot(db, store, paracetamol, on_hand=2)
    lot_b = make_lot(db, store, ibuprofen, on_hand=1)
    body = order_body([(paracetamol.id, 5), (ibuprofen.id, 3)])
    r = client.post(URL, json=body, headers=auth(patient))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "insufficient_stock"
    assert sorted(error["details"]["missing"], key=lambda m: m["product_id"]) == [
        {"product_id": paracetamol.id, "quantity_missing": 3, "name": paracetamol.name},
        {"product_id": ibuprofen.id, "quantity_missing": 2, "name": ibuprofen.name},
    ]
    # The patient reads which items are short, by the names they chose them by.
    assert f"{paracetamol.name} (3 short)" in error["message"]
    assert f"{ibuprofen.name} (2 short)" in error["message"]
    assert stock(db, lot_a) == (2, 0) and stock(db, lot_b) == (1, 0)
    assert order_count(db) == 0


def test_a_closed_store_is_not_offered_and_the_patient_hears_when_it_opens(
    client, db, patient, paracetamol
):
    today = clock.today(STORE_ZONE).weekday()
    # Open one hour on another weekday only: closed now, whatever the time of the run.
    hours = [{"weekday": (today + 3) % 7, "opens": "09:00", "closes": "10:00"}]
    closed = make_store(db, at=offset(300, 0), opening_hours=hours)
    lot = make_lot(db, closed, paracetamol)
    r = client.post(URL, json=order_body([(paracetamol.id, 1)]), headers=auth(patient))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "store_closed"
    # In the store's own time, as its hours are written: 09:00 on that weekday, not 01:00 UTC.
    opens_at = datetime.fromisoformat(error["details"]["opens_at"])
    assert (opens_at.weekday(), opens_at.hour, opens_at.minute) == ((today + 3) % 7, 9, 0)
    assert opens_at.utcoffset() == timedelta(hours=8)
    assert stock(db, lot) == (10, 0)


def _bad_bodies(product_id: int, controlled_id: int, limited_id: int):
    ok = order_body([(product_id, 1)])
    yield (
        "zero quantity",
        {**ok, "items": [{"product_id": product_id, "quantity": 0}]},
        "invalid_input",
    )
    yield (
        "negative quantity",
        {**ok, "items": [{"product_id": product_id, "quantity": -2}]},
        "invalid_input",
    )
    yield (
        "huge quantity",
        {**ok, "items": [{"product_id": product_id, "quantity": 10**12}]},
        "invalid_input",
    )
    yield "no items", {**ok, "items": []}, "invalid_input"
    yield "unknown product", order_body([(product_id, 1), (99_999_999, 1)]), "unknown_product"
    yield "controlled product", order_body([(controlled_id, 1)]), "controlled_product"
    yield "over the purchase limit", order_body([(limited_id, 3)]), "max_per_order_exceeded"
    yield "latitude out of range", {**ok, "location": {"lat": 91, "lon": 0}}, "invalid_input"
    yield "longitude out of range", {**ok, "location": {"lat": 0, "lon": 180.5}}, "invalid_input"
    yield (
        "address out of range",
        order_body([(product_id, 1)], fulfillment="delivery", address_at=(0, 200)),
        "invalid_input",
    )
    yield (
        "delivery without address",
        order_body([(product_id, 1)], fulfillment="delivery"),
        "invalid_input",
    )
    yield "unknown fulfillment", {**ok, "fulfillment": "drone"}, "invalid_input"
    yield "unknown store", {**ok, "store_id": 99_999_999}, "unknown_store"
    yield "extra field", {**ok, "price_minor": 1}, "invalid_input"
    yield (
        "string quantity",
        {**ok, "items": [{"product_id": product_id, "quantity": "many"}]},
        "invalid_input",
    )


def test_bad_input_gets_a_clear_error_and_changes_nothing(client, db, patient, store, paracetamol):
    controlled = make_product(db, controlled=True)
    limited = make_product(db, max_per_order=2)
    lots = [make_lot(db, store, p) for p in (paracetamol, controlled, limited)]
    for label, body, code in _bad_bodies(paracetamol.id, controlled.id, limited.id):
        r = client.post(URL, json=body, headers=auth(patient))
        assert r.status_code == 422, (label, r.text)
        assert r.json()["error"]["code"] == code, (label, r.json())
        assert r.json()["error"]["message"], label
    r = client.post(
        URL, content=b'{"items": [', headers={**auth(patient), "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "malformed_json"
    assert [stock(db, lot) for lot in lots] == [(10, 0)] * 3
    assert order_count(db) == 0


@pytest.mark.parametrize("role", [Role.PHARMACIST, Role.COURIER, Role.DOCTOR, Role.ADMIN])
def test_only_patients_place_orders(client, db, store, paracetamol, role):
    lot = make_lot(db, store, paracetamol)
    user = make_user(db, role=role)
    r = client.post(URL, json=order_body([(paracetamol.id, 1)]), headers=auth(user))
    assert r.status_code == 403
    assert stock(db, lot) == (10, 0)


def test_anonymous_callers_must_sign_in(client, db, store, paracetamol):
    make_lot(db, store, paracetamol)
    r = client.post(URL, json=order_body([(paracetamol.id, 1)]))
    assert r.status_code == 401
    assert order_count(db) == 0


def test_the_order_row_records_the_patient_and_the_reserved_lots(
    client, db, patient, store, paracetamol
):
    lot = make_lot(db, store, paracetamol)
    r = client.post(URL, json=order_body([(paracetamol.id, 2)], at=HOME), headers=auth(patient))
    order = db.get(Order, r.json()["id"])
    assert order.patient_id == patient.id and order.requested_fulfillment == "pickup"
    assert [(a.lot_id, a.quantity) for a in order.lines[0].allocations] == [(lot.id, 2)]
