"""GET /orders and /orders/{id}: only one's own, or one's store's; codes only to the patient."""

import uuid

import pytest

from o2o.orders import lifecycle
from o2o.orders.models import OrderStatus
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_order, make_product, make_store, make_user, offset

URL = "/api/v1/orders"


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0))
    other_store = make_store(db, at=offset(0, 900))
    product = make_product(db)
    lot = make_lot(db, store, product, on_hand=100)
    other_lot = make_lot(db, other_store, product, on_hand=100)
    patient = make_user(db, role=Role.PATIENT)
    other_patient = make_user(db, role=Role.PATIENT)
    return {
        "store": store,
        "other_store": other_store,
        "lot": lot,
        "other_lot": other_lot,
        "patient": patient,
        "other_patient": other_patient,
        "pharmacist": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
        "other_pharmacist": make_user(db, role=Role.PHARMACIST, store_ids=[other_store.id]),
        "courier": make_user(db, role=Role.COURIER),
        "doctor": make_user(db, role=Role.DOCTOR),
        "admin": make_user(db, role=Role.ADMIN),
        "order": make_order(db, patient, store, [(lot, 1)]),
    }


def test_the_patient_reads_their_order_with_codes_and_timeline(client, world):
    order = world["order"]
    r = client.get(f"{URL}/{order.id}", headers=auth(world["patient"]))
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == str(order.id)
    assert body["pickup_code"] == order.pickup_code
    assert body["pickup_qr"] == f"O2O-PICKUP:{order.id}:{order.pickup_code}"
    assert body["delivery_code"] == order.delivery_code
    assert body["timeline"][0]["status"] == "released"


@pytest.mark.parametrize("who", ["pharmacist", "admin"])
def test_staff_read_the_order_without_the_codes(client, world, who):
    r = client.get(f"{URL}/{world['order'].id}", headers=auth(world[who]))
    assert r.status_code == 200
    assert r.json()["pickup_code"] is None and r.json()["delivery_code"] is None
    assert r.json()["pickup_qr"] is None


@pytest.mark.parametrize(
    ("who", "status"),
    [("other_patient", 404), ("other_pharmacist", 404), ("courier", 403), ("doctor", 403)],
)
def test_others_cannot_read_the_order(client, world, who, status):
    r = client.get(f"{URL}/{world['order'].id}", headers=auth(world[who]))
    assert r.status_code == status
    assert world["order"].pickup_code not in r.text


def test_anonymous_and_unknown_and_malformed_ids(client, world):
    assert client.get(f"{URL}/{world['order'].id}").status_code == 401
    r = client.get(f"{URL}/{uuid.uuid4()}", headers=auth(world["patient"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "order_not_found"
    assert client.get(f"{URL}/42", headers=auth(world["patient"])).status_code == 422


def test_a_patient_lists_only_their_own_orders_newest_first_in_pages(client, db, world):
    patient = world["patient"]
    more = [make_order(db, patient, world["store"], [(world["lot"], 1)]) for _ in range(4)]
    make_order(db, world["other_patient"], world["store"], [(world["lot"], 1)])
    seen = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = client.get(URL, params=params, headers=auth(patient))
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [world["order"], *more]
    assert sorted(seen) == sorted(str(o.id) for o in expected)
    assert len(seen) == len(set(seen))


def test_filter_by_status(client, db, world):
    cancelled = make_order(db, world["patient"], world["store"], [(world["lot"], 1)])
    lifecycle.cancel(db, cancelled, reason="test")
    db.commit()
    r = client.get(URL, params={"status": "cancelled"}, headers=auth(world["patient"]))
    assert [o["id"] for o in r.json()["items"]] == [str(cancelled.id)]
    r = client.get(URL, params={"status": "lost"}, headers=auth(world["patient"]))
    assert r.status_code == 422


def test_store_staff_list_their_stores_orders_only(client, db, world):
    theirs = make_order(db, world["other_patient"], world["store"], [(world["lot"], 1)])
    elsewhere = make_order(db, world["patient"], world["other_store"], [(world["other_lot"], 1)])
    r = client.get(URL, params={"store_id": world["store"].id}, headers=auth(world["pharmacist"]))
    assert r.status_code == 200
    ids = {o["id"] for o in r.json()["items"]}
    assert ids == {str(world["order"].id), str(theirs.id)}
    assert all(o["pickup_code"] is None for o in r.json()["items"])
    r = client.get(
        URL, params={"store_id": world["other_store"].id}, headers=auth(world["pharmacist"])
    )
    assert r.status_code == 404
    r = client.get(URL, params={"status": "released"}, headers=auth(world["pharmacist"]))
    assert str(elsewhere.id) not in {o["id"] for o in r.json()["items"]}


@pytest.mark.parametrize(("who", "status"), [("courier", 403), ("doctor", 403), (None, 401)])
def test_the_list_refuses_other_roles(client, world, who, status):
    r = client.get(URL, headers=auth(world[who]) if who else {})
    assert r.status_code == status


def test_a_bad_cursor_or_limit_is_refused(client, world):
    headers = auth(world["patient"])
    assert client.get(URL, params={"cursor": "!!nope"}, headers=headers).status_code == 422
    assert client.get(URL, params={"limit": 0}, headers=headers).status_code == 422
    assert client.get(URL, params={"limit": 101}, headers=headers).status_code == 422


def test_status_changes_show_up_in_the_timeline(client, db, world):
    order = world["order"]
    lifecycle.transition(db, order, OrderStatus.PREPARING, reason="started")
    db.commit()
    r = client.get(f"{URL}/{order.id}", headers=auth(world["patient"]))
    assert [(e["status"], e["reason"]) for e in r.json()["timeline"]] == [
        ("released", "Test routing."),
        ("preparing", "started"),
    ]
