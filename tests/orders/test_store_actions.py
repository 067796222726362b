"""The store's side: prepare, ready, hand over with the pickup code; cancellation; who may act."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderEvent, OrderStatus
from o2o.users.models import Role
from tests.factories import auth, make_lot, make_order, make_product, make_store, make_user, offset
from tests.orders.helpers import stock

URL = "/api/v1/orders"


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000)
    other_store = make_store(db, at=offset(0, 900))
    product = make_product(db)
    w = {
        "store": store,
        "other_store": other_store,
        "product": product,
        "lot": make_lot(db, store, product, on_hand=10),
        "patient": make_user(db, role=Role.PATIENT),
        "other_patient": make_user(db, role=Role.PATIENT),
        "pharmacist": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
        "other_pharmacist": make_user(db, role=Role.PHARMACIST, store_ids=[other_store.id]),
        "courier": make_user(db, role=Role.COURIER),
        "doctor": make_user(db, role=Role.DOCTOR),
        "admin": make_user(db, role=Role.ADMIN),
    }
    return w


@pytest.fixture
def order(db, world):
    return make_order(db, world["patient"], world["store"], [(world["lot"], 2)])


def post(client, order, action, user, json=None):
    headers = auth(user) if user is not None else {}
    return client.post(f"{URL}/{order.id}/{action}", json=json, headers=headers)


def timeline(db, order) -> list[str]:
    events = db.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
    )
    return [e.to_status.value for e in events]


def test_prepare_ready_and_handover_take_the_stock_off_the_shelf(client, db, world, order):
    staff = world["pharmacist"]
    r = post(client, order, "prepare", staff)
    assert r.status_code == 200 and r.json()["status"] == "preparing"
    r = post(client, order, "ready", staff)
    assert r.status_code == 200 and r.json()["status"] == "ready"
    held = datetime.fromisoformat(r.json()["hold_expires_at"]) - datetime.fromisoformat(
        r.json()["ready_at"]
    )
    assert held == timedelta(hours=48)
    # Staff never see the codes; the handover takes the one the patient shows.
    assert r.json()["pickup_code"] is None and r.json()["delivery_code"] is None
    r = post(client, order, "handover", staff, {"pickup_code": order.pickup_code})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert stock(db, world["lot"]) == (8, 0)
    assert [e["status"] for e in r.json()["timeline"]] == [
        "released",
        "preparing",
        "ready",
        "completed",
    ]


def _to_ready(client, order, staff):
    assert post(client, order, "prepare", staff).status_code == 200
    assert post(client, order, "ready", staff).status_code == 200


def test_a_wrong_pickup_code_counts_and_the_code_locks_after_five(client, db, world, order):
    staff = world["pharmacist"]
    _to_ready(client, order, staff)
    wrong = "000000" if order.pickup_code != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        r = post(client, order, "handover", staff, {"pickup_code": wrong})
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "wrong_pickup_code"
        assert r.json()["error"]["details"] == {"tries_left": left}
    r = post(client, order, "handover", staff, {"pickup_code": order.pickup_code})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "pickup_code_locked"
    db.expire_all()
    assert db.get(Order, order.id).status is OrderStatus.READY
    assert db.get(Order, order.id).pickup_code_failures == 5
    assert stock(db, world["lot"]) == (10, 2)


def test_the_scanned_qr_payload_hands_the_order_over(client, db, world, order):
    staff = world["pharmacist"]
    _to_ready(client, order, staff)
    shown = client.get(f"{URL}/{order.id}", headers=auth(world["patient"])).json()
    assert shown["pickup_qr"] == f"O2O-PICKUP:{order.id}:{order.pickup_code}"
    r = post(client, order, "handover", staff, {"pickup_code": shown["pickup_qr"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert stock(db, world["lot"]) == (8, 0)


def test_another_orders_qr_is_a_wrong_code_even_with_the_same_digits(client, db, world, order):
    staff = world["pharmacist"]
    _to_ready(client, order, staff)
    other = make_order(db, world["other_patient"], world["store"], [(world["lot"], 1)])
    # Another order's QR, whatever its digits, never hands this one over.
    payload = f"O2O-PICKUP:{other.id}:{order.pickup_code}"
    r = post(client, order, "handover", staff, {"pickup_code": payload})
    assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_pickup_code"
    db.expire_all()
    assert db.get(Order, order.id).pickup_code_failures == 1
    assert db.get(Order, order.id).status is OrderStatus.READY


def test_a_malformed_code_is_refused_without_counting_a_try(client, db, world, order):
    _to_ready(client, order, world["pharmacist"])
    r = post(client, order, "handover", world["pharmacist"], {"pickup_code": "12ab"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    db.expire_all()
    assert db.get(Order, order.id).pickup_code_failures == 0


def test_handover_before_ready_is_an_illegal_transition_and_changes_nothing(
    client, db, world, order
):
    r = post(client, order, "handover", world["pharmacist"], {"pickup_code": order.pickup_code})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert timeline(db, order) == ["released"]
    assert stock(db, world["lot"]) == (10, 2)


@pytest.mark.parametrize(
    ("steps", "action"),
    [([], "ready"), (["prepare"], "prepare"), (["prepare", "ready"], "prepare")],
)
def test_steps_out_of_order_are_refused_with_409(client, db, world, order, steps, action):
    for step in steps:
        assert post(client, order, step, world["pharmacist"]).status_code == 200
    before = timeline(db, order)
    r = post(client, order, action, world["pharmacist"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert timeline(db, order) == before


def test_a_delivery_is_not_handed_over_at_the_counter(client, db, world):
    delivery = make_order(
        db, world["patient"], world["store"], [(world["lot"], 1)], fulfillment="delivery"
    )
    r = post(client, delivery, "handover", world["pharmacist"], {"pickup_code": "123456"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_pickup_order"


def test_a_ready_delivery_opens_a_courier_job(client, db, world):
    from dispatch.models import Job

    delivery = make_order(
        db, world["patient"], world["store"], [(world["lot"], 1)], fulfillment="delivery"
    )
    _to_ready(client, delivery, world["pharmacist"])
    assert db.scalar(select(Job).where(Job.order_id == delivery.id)) is not None
    db.expire_all()
    assert db.get(Order, delivery.id).hold_expires_at is None


def test_the_patient_cancels_and_the_stock_returns(client, db, world, order):
    r = post(client, order, "cancel", world["patient"], {"reason": "Found it at home"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["timeline"][-1]["reason"] == "Found it at home"
    assert stock(db, world["lot"]) == (10, 0)
    again = post(client, order, "cancel", world["patient"], {"reason": "twice"})
    assert again.status_code == 409
    assert stock(db, world["lot"]) == (10, 0)


def test_the_patient_cannot_cancel_once_the_courier_has_it(client, db, world):
    delivery = make_order(
        db, world["patient"], world["store"], [(world["lot"], 1)], fulfillment="delivery"
    )
    for to in (OrderStatus.PREPARING, OrderStatus.READY, OrderStatus.OUT_FOR_DELIVERY):
        lifecycle.transition(db, delivery, to)
    db.commit()
    r = post(client, delivery, "cancel", world["patient"], {"reason": "too slow"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert stock(db, world["lot"]) == (10, 1)


def test_the_store_may_cancel_with_a_reason(client, db, world, order):
    r = post(client, order, "cancel", world["pharmacist"], {"reason": "Box damaged"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert stock(db, world["lot"]) == (10, 0)


def test_a_cancel_needs_a_reason(client, db, world, order):
    for body in ({}, {"reason": ""}, {"reason": "x" * 501}):
        r = post(client, order, "cancel", world["patient"], body)
        assert r.status_code == 422
    assert stock(db, world["lot"]) == (10, 2)


STAFF_ACTIONS = [
    ("prepare", None),
    ("ready", None),
    ("handover", {"pickup_code": "123456"}),
]


@pytest.mark.parametrize(("action", "body"), STAFF_ACTIONS)
@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("other_pharmacist", 404),
        ("patient", 403),
        ("other_patient", 403),
        ("courier", 403),
        ("doctor", 403),
        (None, 401),
    ],
)
def test_store_actions_refuse_everyone_but_the_orders_store(
    client, db, world, order, action, body, who, status
):
    r = post(client, order, action, world[who] if who else None, body)
    assert r.status_code == status, r.text
    assert timeline(db, order) == ["released"]


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("other_patient", 404),
        ("other_pharmacist", 404),
        ("courier", 403),
        ("doctor", 403),
        (None, 401),
    ],
)
def test_cancel_refuses_everyone_else(client, db, world, order, who, status):
    r = post(client, order, "cancel", world[who] if who else None, {"reason": "mine now"})
    assert r.status_code == status
    assert stock(db, world["lot"]) == (10, 2)
    assert timeline(db, order) == ["released"]


def test_admins_may_act_for_any_store(client, db, world, order):
    assert post(client, order, "prepare", world["admin"]).status_code == 200
