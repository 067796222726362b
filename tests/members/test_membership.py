"""Members as a patient meets them: points for a completed order, taken back by a confirmed
refund, expired after the period; levels by 12-month spend; free delivery at checkout, shown on
the order; the ledger written once per event."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from o2o import clock
from o2o.config import get_settings
from o2o.members import service
from o2o.members.models import PointEntry
from o2o.payments import service as payments_service
from o2o.payments.models import Payment
from o2o.users.models import Role
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
    payment_event,
)
from tests.members.helpers import completed_order
from tests.orders.helpers import order_body

API = "/api/v1"
EVENTS = f"{API}/payments/events"


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0), zone_half_side_m=3000)
    product = make_product(db, name="Ibuprofen 200 mg")
    lot = make_lot(db, store, product, on_hand=50, price_minor=1250)
    payment_app(db)
    return {
        "store": store,
        "product": product,
        "lot": lot,
        "patient": make_user(db, role=Role.PATIENT),
        "staff": make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
    }


def membership(client, patient) -> dict:
    r = client.get(f"{API}/users/me/membership", headers=auth(patient))
    assert r.status_code == 200, r.text
    return r.json()


def send(client, db, payment_id, type_="captured", **kw):
    headers, raw = payment_event(db, payment_id, type_, **kw)
    return client.post(EVENTS, content=raw, headers=headers)


def paid_and_collected(client, db, world, qty=2) -> dict:
    """An online pickup order, paid through the payment app and handed over at the counter."""
    r = client.post(
        f"{API}/orders",
        json=order_body([(world["product"].id, qty)]),
        headers=auth(world["patient"]),
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert send(client, db, order["payment"]["id"]).status_code == 200
    staff = auth(world["staff"])
    for step in ("prepare", "ready"):
        assert client.post(f"{API}/orders/{order['id']}/{step}", headers=staff).status_code == 200
    r = client.post(
        f"{API}/orders/{order['id']}/handover",
        json={"pickup_code": order["pickup_code"]},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    return order


def test_a_new_member_has_no_points_and_sees_the_way_to_the_next_level(client, world):
    got = membership(client, world["patient"])
    silver = get_settings().member_silver_spend_minor
    assert got["points"] == 0 and got["spend_12m_minor"] == 0
    assert got["level"] == "member"
    assert got["next_level"] == {
        "level": "silver",
        "from_spend_minor": silver,
        "spend_needed_minor": silver,
    }
    assert [b["code"] for b in got["benefits"]] == ["points"]
    assert got["history"] == []


def test_a_completed_order_earns_points_and_a_confirmed_refund_takes_them_back(client, db, world):
    order = paid_and_collected(client, db, world, qty=2)  # 2 x 12.50 CNY = 25.00
    got = membership(client, world["patient"])
    assert got["points"] == 25  # one point per yuan
    assert got["spend_12m_minor"] == 2500
    assert [(h["kind"], h["points"], h["order_id"]) for h in got["history"]] == [
        ("accrual", 25, order["id"])
    ]

    # The chain refunds one box (a return at the counter) and the payment app confirms it.
    payment = db.scalar(select(Payment).where(Payment.order_id == order["id"]))
    refund = payments_service.request_refund(db, payment, 1250, reason="returned")
    event = payment_event(db, payment.id, "refunded", amount_minor=1250, refund_id=refund.id)
    assert client.post(EVENTS, content=event[1], headers=event[0]).status_code == 200
    got = membership(client, world["patient"])
    assert got["points"] == 12 and got["spend_12m_minor"] == 1250
    assert got["history"][0]["kind"] == "reversal" and got["history"][0]["points"] == -13

    # The same confirmation delivered again takes nothing more.
    assert client.post(EVENTS, content=event[1], headers=event[0]).status_code == 200
    assert membership(client, world["patient"])["points"] == 12


def test_a_refund_before_completion_takes_nothing_back_that_was_never_earned(db, world):
    # A late delivery's compensation is taken off the order before it completes: the order
    # earns on what it cost, and the refund of the compensation reverses nothing.
    patient = world["patient"]
    order = completed_order(db, patient, world["store"], [(world["lot"], 2)])
    earned = service.membership(db, patient.id).points
    service.on_refund_settled(
        db, order_id=order.id, refund_id=uuid.uuid4(), paid_minor=order.total_minor
    )
    assert service.membership(db, patient.id).points == earned == 25


def test_a_completion_handled_twice_earns_once(db, world):
    order = completed_order(db, world["patient"], world["store"], [(world["lot"], 2)])
    service.on_order_completed(db, order)
    service.on_order_completed(db, order)
    entries = db.scalar(
        select(func.count()).select_from(PointEntry).where(PointEntry.order_id == order.id)
    )
    assert entries == 1
    assert service.points_balance(db, world["patient"].id) == 25


def test_points_expire_after_the_period_once_however_often_the_sweep_runs(db, world):
    patient, store, lot = world["patient"], world["store"], world["lot"]
    days = get_settings().member_points_expire_days
    now = clock.now()
    old = completed_order(db, patient, store, [(lot, 2)], at=now - timedelta(days=days + 1))
    completed_order(db, patient, store, [(lot, 4)], at=now - timedelta(days=1))  # 50 points
    # Part of the old order was refunded: only what is left of its points can expire.
    service.on_refund_settled(db, order_id=old.id, refund_id=uuid.uuid4(), paid_minor=1250)
    assert service.points_balance(db, patient.id) == 12 + 50

    assert service.expire_points(db, now=now) == (1, 12)
    assert service.expire_points(db, now=now) == (0, 0)
    assert service.points_balance(db, patient.id) == 50
    kinds = [e.kind for e in service.membership(db, patient.id, now=now).history]
    assert kinds.count("expiry") == 1

    # A refund of the expired order after the expiry takes spend back, never points twice.
    service.on_refund_settled(db, order_id=old.id, refund_id=uuid.uuid4(), paid_minor=0)
    assert service.points_balance(db, patient.id) == 50


def test_levels_follow_the_twelve_month_spend(db, world):
    s = get_settings()
    patient, store = world["patient"], world["store"]
    big = make_lot(db, store, make_product(db), on_hand=20, price_minor=s.member_gold_spend_minor)
    now = clock.now()
    # Spent 13 months ago: does not count.
    completed_order(db, patient, store, [(big, 1)], at=now - timedelta(days=395))
    m = service.membership(db, patient.id, now=now)
    assert (m.level.name, m.spend_12m_minor) == ("member", 0)
    completed_order(db, patient, store, [(big, 1)], at=now - timedelta(days=30))
    m = service.membership(db, patient.id, now=now)
    assert m.level.name == "gold" and m.spend_12m_minor == s.member_gold_spend_minor
    assert m.next_level[0].name == "platinum"
    assert "free_delivery" in [b.code for b in m.benefits]


def test_a_gold_member_s_delivery_is_free_and_the_order_says_why(client, db, world):
    s = get_settings()
    store = world["store"]
    gold, plain = world["patient"], make_user(db, role=Role.PATIENT)
    big = make_lot(db, store, make_product(db), on_hand=5, price_minor=s.member_gold_spend_minor)
    completed_order(db, gold, store, [(big, 1)])

    body = order_body([(world["product"].id, 1)], fulfillment="delivery", address_at=offset(300, 0))
    free = client.post(f"{API}/orders", json=body, headers=auth(gold))
    paid = client.post(f"{API}/orders", json=body, headers=auth(plain))
    assert free.status_code == paid.status_code == 201, (free.text, paid.text)
    free, paid = free.json(), paid.json()
    assert free["fulfillment"] == paid["fulfillment"] == "delivery"

    assert paid["delivery_fee_minor"] == store.delivery_fee_minor == 500
    assert paid["delivery_fee_waiver"] is None
    assert paid["payment"]["amount_minor"] == 1250 + 500

    assert free["delivery_fee_minor"] == 0
    assert free["delivery_fee_waiver"] == {
        "amount_minor": 500,
        "currency": "CNY",
        "level": "gold",
        "reason": "Free delivery for Gold members.",
    }
    assert free["total_minor"] == free["payment"]["amount_minor"] == 1250
    # Read again, and in the list: the waiver stays on the order.
    again = client.get(f"{API}/orders/{free['id']}", headers=auth(gold)).json()
    assert again["delivery_fee_waiver"]["amount_minor"] == 500
    listed = client.get(f"{API}/orders", headers=auth(gold)).json()["items"]
    assert (
        next(o for o in listed if o["id"] == free["id"])["delivery_fee_waiver"]["level"] == "gold"
    )


@pytest.mark.parametrize("role", [Role.PHARMACIST, Role.COURIER, Role.DOCTOR, Role.ADMIN])
def test_only_patients_have_a_membership(client, db, role):
    assert client.get(f"{API}/users/me/membership").status_code == 401
    r = client.get(f"{API}/users/me/membership", headers=auth(make_user(db, role=role)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
