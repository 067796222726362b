"""Equivalents and substitution: the catalogue's equivalence key and listing, search counting an
equivalent in stock, checkout reserving it, and a pharmacist's substitution at the counter with
and without the patient's consent, its money through the payment flow and its stock through
stores.allocation (raced for real)."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from o2o import clock
from o2o.db import session_scope
from o2o.orders.models import Order, OrderLine, OrderSubstitution
from o2o.outbox import OutboxEvent
from o2o.payments import apps as payment_apps
from o2o.payments.models import Payment, PaymentCharge, Refund
from o2o.users.models import Role
from stores import proximity, search, substitutes
from stores.cart import CartLine
from stores.models import Lot, Product
from tests.factories import (
    auth,
    gtin,
    make_fleet_load,
    make_lot,
    make_order,
    make_product,
    make_store,
    make_user,
    offset,
    pay_through,
    payment_app,
)
from tests.orders.helpers import HOME, order_body, stock

API = "/api/v1"


def _generic(db, **kw) -> Product:
    """A product of one made-up generic (unique per test), 200 mg tablets in packs of 20."""
    values = dict(generic_name=_generic.name, strength="200 mg", dosage_form="tablets")
    values.update(kw)
    return make_product(db, **values)


@pytest.fixture(autouse=True)
def _fresh_generic():
    _generic.name = f"testfenac {uuid.uuid4().hex[:8]}"


@pytest.fixture
def patient(db):
    return make_user(db, role=Role.PATIENT)


@pytest.fixture
def near(db):
    return make_store(db, at=offset(400, 0), name="Near Pharmacy")


@pytest.fixture
def far(db):
    return make_store(db, at=offset(2500, 0), name="Far Pharmacy")


@pytest.fixture
def pharmacist(db, near):
    return make_user(db, role=Role.PHARMACIST, store_ids=[near.id])


# --- equivalents ------------------------------------------------------------------------------


def test_equivalents_share_a_normalised_key_and_are_listed(client, db):
    asked = _generic(db, name="Brand A")
    same = _generic(db, name="Brand B", strength="200MG", dosage_form=" Tablets ")
    smaller_pack = _generic(db, name="Brand C", pack_size=10)
    _generic(db, name="Stronger", strength="400 mg")
    _generic(db, name="Cream", dosage_form="tablets", route="topical")
    _generic(db, name="Controlled", controlled=True)
    db.flush()
    r = client.get(f"{API}/products/{asked.id}/equivalents")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["equivalence_key"] == f"{_generic.name}|200mg|tablets|oral"
    assert [p["id"] for p in body["items"]] == [same.id, smaller_pack.id]
    assert client.get(f"{API}/products/999999999/equivalents").status_code == 404


def test_a_product_added_through_the_api_gets_its_route_and_key(client, db):
    admin = make_user(db, role=Role.ADMIN)
    r = client.post(
        f"{API}/products",
        json={
            "name": "Testgel",
            "generic_name": "Diclofenac",
            "strength": "1 %",
            "dosage_form": "Gel",
            "pack_size": 1,
            "gtin": gtin(),
        },
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    assert (r.json()["route"], r.json()["equivalence_key"]) == (
        "topical",
        "diclofenac|1%|gel|topical",
    )


# --- search -----------------------------------------------------------------------------------


def _search(client, items, **kw):
    r = client.post(
        f"{API}/search/stores",
        json={"location": {"lat": HOME[0], "lon": HOME[1]}, "items": items, **kw},
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_search_counts_an_equivalent_in_stock_and_says_so(client, db, near, far):
    asked = _generic(db, name="Brand A", pack_size=20)
    half_pack = _generic(db, name="Brand C", pack_size=10)
    make_lot(db, near, half_pack, on_hand=4)
    make_lot(db, far, asked, on_hand=5)
    results = _search(client, [{"product_id": asked.id, "quantity": 2}])
    # The near store is complete through 4 packs of 10 (the same 40 tablets), and comes first.
    assert [(r["store"]["id"], r["complete"]) for r in results] == [(near.id, True), (far.id, True)]
    assert results[0]["substitutes"] == [
        {"for_product_id": asked.id, "product_id": half_pack.id, "quantity": 4}
    ]
    assert results[1]["substitutes"] == []
    # Not allowed: the near store holds nothing of the cart.
    refused = _search(
        client, [{"product_id": asked.id, "quantity": 2, "substitution": "not_allowed"}]
    )
    assert [(r["store"]["id"], r["complete"]) for r in refused] == [(far.id, True)]


def test_a_store_complete_through_an_equivalent_is_answered_as_the_plain_search_answers_it(
    client, db
):
    # A delivering store closed until later in the week, its couriers busy: found through an
    # equivalent, its answer (distance, zone, ETA with the courier wait, hours, fee) is the one
    # the plain search gives when the same store holds the asked product. A store whose zone
    # does not reach the address is not offered for delivery, whatever it holds.
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    opens = clock.now() + timedelta(days=2)
    hours = [{"weekday": opens.weekday(), "opens": f"{opens.hour:02d}:00", "closes": "23:59"}]
    store = make_store(
        db, at=offset(900, 300), zone_half_side_m=3000, timezone="UTC", opening_hours=hours
    )
    elsewhere = make_store(db, at=offset(200, 0), zone_half_side_m=100)
    make_fleet_load(db, store, wait_minutes=12.5, at=clock.now(), open_jobs=6)
    make_lot(db, elsewhere, given, on_hand=5)
    lot = make_lot(db, store, asked, on_hand=5)
    body = {
        "items": [{"product_id": asked.id, "quantity": 2}],
        "fulfillment": "delivery",
        "delivery_location": {"lat": offset(600, 600)[0], "lon": offset(600, 600)[1]},
    }
    (plain,) = _search(client, **body)
    lot.on_hand = 0
    make_lot(db, store, given, on_hand=5)
    db.flush()

    (through,) = _search(client, **body)

    assert through["substitutes"] == [
        {"for_product_id": asked.id, "product_id": given.id, "quantity": 2}
    ]
    assert {**through, "substitutes": []} == plain
    assert plain["is_open"] is False and plain["courier_wait_minutes"] == 13


def test_stores_an_equivalent_completes_are_read_a_batch_at_a_time_until_the_nearest_are_known(
    client, db, monkeypatch
):
    # Two stores a batch: the nearest two hold too little of the equivalent, the next two enough;
    # the answer is the one a single read of every holder gives.
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    short = [make_store(db, at=offset(100 * i, 0)) for i in (1, 2)]
    enough = [make_store(db, at=offset(100 * i, 0)) for i in (3, 4)]
    plain = make_store(db, at=offset(3000, 0))
    for store in short:
        make_lot(db, store, given, on_hand=1)
    for store in enough:
        make_lot(db, store, given, on_hand=5)
    make_lot(db, plain, asked, on_hand=5)
    items = [{"product_id": asked.id, "quantity": 2}]
    at_once = _search(client, items, limit=3)

    monkeypatch.setattr(search, "HOLDERS_BATCH", 2)
    batched = _search(client, items, limit=3)

    assert [r["store"]["id"] for r in batched] == [enough[0].id, enough[1].id, plain.id]
    assert batched == at_once


def test_a_page_filled_through_equivalents_is_answered_without_looking_for_partial_stores(
    client, db, monkeypatch
):
    # The plain search finds one store with the whole cart; an equivalent completes a nearer
    # one. With room for two, the page is full, and the nearest stores holding part of the
    # cart (which would not be shown) are not looked for; with room for three, they are.
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    other = make_product(db, name="Plasters")
    through = make_store(db, at=offset(300, 0))
    part = make_store(db, at=offset(600, 0))
    whole = make_store(db, at=offset(900, 0))
    make_lot(db, through, given, on_hand=5)
    make_lot(db, through, other, on_hand=5)
    make_lot(db, part, asked, on_hand=5)
    make_lot(db, whole, asked, on_hand=5)
    make_lot(db, whole, other, on_hand=5)
    walks = []
    walk = proximity.walk
    monkeypatch.setattr(proximity, "walk", lambda *a: walks.append(1) or walk(*a))
    lines = [CartLine(asked.id, 2), CartLine(other.id, 1)]
    wishes = {asked.id: None, other.id: None}

    def found(limit):
        walks.clear()
        matches = substitutes.search_stores(
            db, lat=HOME[0], lon=HOME[1], lines=lines, wishes=wishes, limit=limit
        )
        return [(m.store_id, m.complete, bool(m.substitutes)) for m in matches], len(walks)

    assert found(2) == ([(through.id, True, True), (whole.id, True, False)], 1)
    assert found(3) == (
        [(through.id, True, True), (whole.id, True, False), (part.id, False, False)],
        2,
    )
    # The API answers as the planned statements do.
    items = [{"product_id": asked.id, "quantity": 2}, {"product_id": other.id, "quantity": 1}]
    assert [r["store"]["id"] for r in _search(client, items, limit=2)] == [through.id, whole.id]


def test_a_page_filled_through_equivalents_still_refuses_a_cart_that_changed_since_it_was_cached(
    client, db
):
    # The first search caches the asked product's statistics; no store holds it, and its
    # equivalent fills the page. When the product's limit is lowered, the next search's
    # statements never check that cart (no store holds it whole), so the stores holding part of
    # it are looked for all the same, full page or not, and that check refuses it.
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    through = make_store(db, at=offset(300, 0))
    make_lot(db, through, given, on_hand=5)
    items = [{"product_id": asked.id, "quantity": 2}]
    assert [r["store"]["id"] for r in _search(client, items, limit=1)] == [through.id]
    asked.max_per_order = 1
    db.flush()

    r = client.post(
        f"{API}/search/stores",
        json={"location": {"lat": HOME[0], "lon": HOME[1]}, "items": items, "limit": 1},
    )

    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "max_per_order_exceeded"


def test_search_never_substitutes_a_prescription_item_by_default(client, db, near):
    asked = _generic(db, name="Rx A", rx_only=True)
    other = _generic(db, name="Rx B", rx_only=True)
    make_lot(db, near, other, on_hand=5)
    assert _search(client, [{"product_id": asked.id, "quantity": 1}]) == []
    allowed = _search(client, [{"product_id": asked.id, "quantity": 1, "substitution": "allowed"}])
    assert allowed[0]["substitutes"] == [
        {"for_product_id": asked.id, "product_id": other.id, "quantity": 1}
    ]


# --- checkout ---------------------------------------------------------------------------------


def test_checkout_reserves_the_equivalent_the_search_chose(client, db, patient, near):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    first = make_lot(db, near, given, on_hand=3, days=100, price_minor=2100)
    later = make_lot(db, near, given, on_hand=3, days=400, price_minor=2300)
    r = client.post(f"{API}/orders", json=order_body([(asked.id, 4)]), headers=auth(patient))
    assert r.status_code == 201, r.text
    (line,) = r.json()["lines"]
    # Both products on the line, FEFO over the equivalent's lots, the price actually charged.
    assert line["product_id"] == given.id and line["requested_product_id"] == asked.id
    assert line["substitution_reason"] == "out_of_stock" and line["quantity"] == 4
    assert line["price_minor"] == (3 * 2100 + 2300 + 2) // 4
    assert r.json()["total_minor"] == line["price_minor"] * 4
    assert stock(db, first) == (3, 3) and stock(db, later) == (3, 1)


def test_checkout_refuses_when_the_patient_does_not_allow_an_equivalent(client, db, patient, near):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    lot = make_lot(db, near, given, on_hand=3)
    body = order_body([(asked.id, 1)])
    body["items"][0]["substitution"] = "not_allowed"
    r = client.post(f"{API}/orders", json=body, headers=auth(patient))
    assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_stock"
    assert stock(db, lot) == (3, 0)


# --- at the counter ---------------------------------------------------------------------------


def _events(db, order_id, event_type):
    return db.scalars(
        select(OutboxEvent).where(
            OutboxEvent.aggregate_id == str(order_id), OutboxEvent.event_type == event_type
        )
    ).all()


def _released(db, patient, store, lot, qty, *, allowed: bool):
    order = make_order(db, patient, store, [(lot, qty)])
    order.lines[0].substitution = "allowed" if allowed else "not_allowed"
    db.flush()
    return order


def _substitute(client, pharmacist, order, frm, to, reason="out_of_stock"):
    return client.post(
        f"{API}/orders/{order.id}/substitutions",
        json={"product_id": frm.id, "to_product_id": to.id, "reason": reason},
        headers=auth(pharmacist),
    )


def test_with_consent_up_front_the_equivalent_replaces_the_line_at_once(
    client, db, patient, near, pharmacist
):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    old = make_lot(db, near, asked, on_hand=5, price_minor=1850)
    new = make_lot(db, near, given, on_hand=5, price_minor=1700)
    order = _released(db, patient, near, old, 2, allowed=True)
    r = _substitute(client, pharmacist, order, asked, given, "formulary")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["substitution"]["status"] == "accepted"
    assert body["substitution"]["consent"] == "up_front"
    assert body["substitution"]["difference_minor"] == -300
    (line,) = body["order"]["lines"]
    assert (line["product_id"], line["requested_product_id"], line["price_minor"]) == (
        given.id,
        asked.id,
        1700,
    )
    assert line["substitution_reason"] == "formulary"
    assert body["order"]["subtotal_minor"] == 3400
    assert "warnings" in body["safety"]
    assert stock(db, old) == (5, 0) and stock(db, new) == (5, 2)
    assert len(_events(db, order.id, "order.substituted")) == 1


def test_without_consent_the_patient_is_asked_and_accepts(client, db, patient, near, pharmacist):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    old = make_lot(db, near, asked, on_hand=5)
    new = make_lot(db, near, given, on_hand=5)
    order = _released(db, patient, near, old, 2, allowed=False)
    r = _substitute(client, pharmacist, order, asked, given)
    assert r.status_code == 201, r.text
    sid = r.json()["substitution"]["id"]
    assert r.json()["substitution"]["status"] == "pending"
    # Held for the answer; the line keeps its own lots meanwhile.
    assert stock(db, old) == (5, 2) and stock(db, new) == (5, 2)
    assert r.json()["order"]["lines"][0]["product_id"] == asked.id
    (notice,) = _events(db, order.id, "order.substitution_proposed")
    assert notice.payload["patient_id"] == patient.id and notice.payload["substitution_id"] == sid
    # A second question on the same line waits for the first answer.
    again = _substitute(client, pharmacist, order, asked, given)
    assert again.status_code == 409 and again.json()["error"]["code"] == "substitution_pending"
    # Only the order's patient answers; anyone else finds nothing.
    url = f"{API}/orders/{order.id}/substitutions/{sid}"
    for stranger in (make_user(db, role=Role.PATIENT), pharmacist):
        r = client.post(url + "/accept", headers=auth(stranger))
        assert r.status_code in (403, 404), r.text
    assert stock(db, old) == (5, 2) and stock(db, new) == (5, 2)
    r = client.post(url + "/accept", headers=auth(patient))
    assert r.status_code == 200, r.text
    assert r.json()["lines"][0]["product_id"] == given.id
    assert r.json()["substitutions"][0]["status"] == "accepted"
    assert stock(db, old) == (5, 0) and stock(db, new) == (5, 2)
    r = client.post(url + "/decline", headers=auth(patient))
    assert r.status_code == 409 and r.json()["error"]["code"] == "substitution_not_pending"


def test_a_declined_substitution_gives_the_equivalent_back(client, db, patient, near, pharmacist):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    old = make_lot(db, near, asked, on_hand=5)
    new = make_lot(db, near, given, on_hand=5)
    order = _released(db, patient, near, old, 2, allowed=False)
    sid = _substitute(client, pharmacist, order, asked, given).json()["substitution"]["id"]
    other = make_user(db, role=Role.PATIENT)
    url = f"{API}/orders/{order.id}/substitutions/{sid}/decline"
    assert client.post(url, headers=auth(other)).status_code == 404
    r = client.post(url, headers=auth(patient))
    assert r.status_code == 200, r.text
    assert r.json()["lines"][0]["product_id"] == asked.id
    assert stock(db, old) == (5, 2) and stock(db, new) == (5, 0)


def test_a_cancelled_order_gives_back_what_a_pending_substitution_held(
    client, db, patient, near, pharmacist
):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    old = make_lot(db, near, asked, on_hand=5)
    new = make_lot(db, near, given, on_hand=5)
    order = _released(db, patient, near, old, 2, allowed=False)
    assert _substitute(client, pharmacist, order, asked, given).status_code == 201
    r = client.post(
        f"{API}/orders/{order.id}/cancel", json={"reason": "Not needed"}, headers=auth(patient)
    )
    assert r.status_code == 200, r.text
    assert stock(db, old) == (5, 0) and stock(db, new) == (5, 0)
    assert r.json()["substitutions"][0]["status"] == "withdrawn"


def test_the_counter_refuses_what_is_not_an_equivalent(client, db, patient, near, pharmacist):
    asked = _generic(db, name="Brand A")
    stronger = _generic(db, name="Stronger", strength="400 mg")
    odd_pack = _generic(db, name="Pack of 7", pack_size=7)
    old = make_lot(db, near, asked, on_hand=5)
    make_lot(db, near, stronger, on_hand=5)
    make_lot(db, near, odd_pack, on_hand=50)
    order = _released(db, patient, near, old, 2, allowed=True)
    r = _substitute(client, pharmacist, order, asked, stronger)
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_equivalent"
    r = _substitute(client, pharmacist, order, asked, odd_pack)
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_equivalent_quantity"
    other_store_staff = make_user(db, role=Role.PHARMACIST, store_ids=[])
    r = _substitute(client, other_store_staff, order, asked, stronger)
    assert r.status_code == 404
    assert (
        client.post(
            f"{API}/orders/{order.id}/substitutions",
            json={"product_id": asked.id, "to_product_id": stronger.id, "reason": "cheaper"},
            headers=auth(pharmacist),
        ).status_code
        == 422
    )
    assert stock(db, old) == (5, 2)


def test_an_equivalent_out_of_stock_changes_nothing(client, db, patient, near, pharmacist):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    old = make_lot(db, near, asked, on_hand=5)
    new = make_lot(db, near, given, on_hand=1)
    order = _released(db, patient, near, old, 2, allowed=True)
    r = _substitute(client, pharmacist, order, asked, given)
    assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_stock"
    assert stock(db, old) == (5, 2) and stock(db, new) == (1, 0)
    assert (
        db.scalar(select(OrderSubstitution.id).where(OrderSubstitution.order_id == order.id))
        is None
    )


# --- money ------------------------------------------------------------------------------------


def _paid_order(client, db, patient, product) -> dict:
    r = client.post(f"{API}/orders", json=order_body([(product.id, 2)]), headers=auth(patient))
    assert r.status_code == 201, r.text
    assert pay_through(client, db, r.json()["id"]).status_code == 200
    return r.json()


def test_a_dearer_equivalent_is_charged_through_the_payment_app(
    client, db, patient, near, pharmacist
):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    make_lot(db, near, asked, on_hand=5, price_minor=1000)
    make_lot(db, near, given, on_hand=5, price_minor=1250)
    placed = _paid_order(client, db, patient, asked)
    order = db.get(Order, uuid.UUID(placed["id"]))
    r = _substitute(client, pharmacist, order, asked, given, "patient_request")
    assert r.status_code == 201, r.text
    assert r.json()["substitution"]["difference_minor"] == 500
    payment = db.scalar(select(Payment).where(Payment.order_id == order.id))
    (charge,) = db.scalars(select(PaymentCharge).where(PaymentCharge.payment_id == payment.id))
    assert (charge.amount_minor, charge.status, charge.reason) == (500, "requested", "substitution")
    (request,) = db.scalars(
        select(OutboxEvent).where(OutboxEvent.event_type == "payment.charge_requested")
    ).all()
    assert request.payload["charge_id"] == str(charge.id) and request.payload["amount_minor"] == 500
    # The app captures it: the payment now covers the new total.
    headers, raw = _signed(
        db,
        {
            "event_id": f"evt-{uuid.uuid4()}",
            "type": "charge_captured",
            "payment_id": str(payment.id),
            "charge_id": str(charge.id),
            "amount_minor": 500,
            "currency": payment.currency,
            "psp_reference": "psp-charge-1",
        },
    )
    r = client.post(f"{API}/payments/events", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    db.refresh(payment)
    db.refresh(charge)
    assert charge.status == "captured"
    assert (payment.amount_minor, payment.captured_minor) == (2500, 2500)


def _signed(db, body: dict):
    app, secret = payment_app(db)
    raw = json.dumps(body).encode()
    timestamp = int(clock.now().timestamp())
    return {
        payment_apps.APP_HEADER: str(app.id),
        payment_apps.TIMESTAMP_HEADER: str(timestamp),
        payment_apps.SIGNATURE_HEADER: payment_apps.signature_for(secret, timestamp, raw),
        "Content-Type": "application/json",
    }, raw


def test_a_cheaper_equivalent_is_refunded(client, db, patient, near, pharmacist):
    asked = _generic(db, name="Brand A")
    given = _generic(db, name="Brand B")
    make_lot(db, near, asked, on_hand=5, price_minor=1000)
    make_lot(db, near, given, on_hand=5, price_minor=800)
    placed = _paid_order(client, db, patient, asked)
    order = db.get(Order, uuid.UUID(placed["id"]))
    r = _substitute(client, pharmacist, order, asked, given)
    assert r.status_code == 201, r.text
    payment = db.scalar(select(Payment).where(Payment.order_id == order.id))
    (refund,) = db.scalars(select(Refund).where(Refund.payment_id == payment.id))
    assert (refund.amount_minor, refund.reason) == (400, "substitution")
    assert r.json()["order"]["refunds"][0]["amount_minor"] == 400


# --- the race ---------------------------------------------------------------------------------


def test_two_counters_substituting_onto_the_last_units_never_oversell(committed, real_client):
    """Two pharmacists substitute the same equivalent at once on two orders; its lot holds enough
    for one: one succeeds, the other gets 409 and changes nothing."""
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        staff = make_user(s, role=Role.PHARMACIST, store_ids=[store.id])
        patient = make_user(s, role=Role.PATIENT)
        name = f"racefenac {uuid.uuid4().hex[:8]}"
        asked = make_product(s, generic_name=name, strength="200 mg", dosage_form="tablets")
        given = make_product(s, generic_name=name, strength="200 mg", dosage_form="tablets")
        old = make_lot(s, store, asked, on_hand=10)
        new = make_lot(s, store, given, on_hand=3)
        orders = []
        for _ in range(2):
            order = make_order(s, patient, store, [(old, 2)])
            order.lines[0].substitution = "allowed"
            orders.append(order.id)
        ids = (asked.id, given.id, old.id, new.id)
        headers = auth(staff)
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def substitute(order_id):
        barrier.wait()
        r = real_client.post(
            f"{API}/orders/{order_id}/substitutions",
            json={"product_id": ids[0], "to_product_id": ids[1], "reason": "out_of_stock"},
            headers=headers,
        )
        answers.append(r.status_code)

    threads = [threading.Thread(target=substitute, args=(oid,)) for oid in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [201, 409]
    with session_scope() as s:
        assert (s.get(Lot, ids[3]).on_hand, s.get(Lot, ids[3]).reserved) == (3, 2)
        assert s.get(Lot, ids[2]).reserved == 2  # one order's 2 units given back, one kept
        given_lines = s.scalars(select(OrderLine).where(OrderLine.product_id == ids[1])).all()
        assert len(given_lines) == 1
