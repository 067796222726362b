"""Split orders (`allow_split`): one order placed and paid once, filled in parts by several stores,
each part cancelled or completed on its own, the whole's status derived from the parts."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from dispatch import monitor
from o2o import clock
from o2o.config import get_settings
from o2o.geo import area_element, parse_area
from o2o.order_flow.tasks import expire_due_orders
from o2o.orders.models import LotAllocation, Order, SplitOrder
from o2o.payments import service as payments_service
from o2o.payments.models import Payment, Refund
from o2o.users.models import Role
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_event,
    square_zone,
)
from tests.orders.helpers import order_body, stock

API = "/api/v1"
EVENTS = f"{API}/payments/events"


@pytest.fixture
def world(db):
    near = make_store(db, at=offset(300, 0))
    far = make_store(db, at=offset(900, 0))
    aspirin = make_product(db, name="Aspirin 100 mg")
    saline = make_product(db, name="Saline nasal spray")
    return {
        "near": near,
        "far": far,
        "aspirin": aspirin,
        "saline": saline,
        "near_lot": make_lot(db, near, aspirin, on_hand=5, price_minor=1000),
        "far_lot": make_lot(db, far, saline, on_hand=5, price_minor=700),
        "patient": make_user(db, role=Role.PATIENT),
        "other": make_user(db, role=Role.PATIENT),
        "near_staff": make_user(db, role=Role.PHARMACIST, store_ids=[near.id]),
        "far_staff": make_user(db, role=Role.PHARMACIST, store_ids=[far.id]),
    }


def split_body(world, aspirin=2, saline=1, **extra) -> dict:
    items = [(world["aspirin"].id, aspirin), (world["saline"].id, saline)]
    return order_body(items) | {"allow_split": True} | extra


def place(client, world, body=None, who="patient"):
    return client.post(f"{API}/orders", json=body or split_body(world), headers=auth(world[who]))


def placed(client, world, **extra) -> dict:
    r = place(client, world, split_body(world, **extra))
    assert r.status_code == 201, r.text
    return r.json()


def capture(client, db, split) -> None:
    headers, raw = payment_event(db, split["payment"]["id"])
    r = client.post(EVENTS, content=raw, headers=headers)
    assert r.status_code == 200, r.text


def read(client, world, split_id, who="patient"):
    return client.get(f"{API}/split-orders/{split_id}", headers=auth(world[who]))


def test_a_cart_no_store_holds_is_placed_in_parts_and_paid_once(client, db, world):
    split = placed(client, world)

    assert split["status"] == "awaiting_payment"
    near_part, far_part = split["parts"]
    assert near_part["store"]["id"] == world["near"].id
    assert far_part["store"]["id"] == world["far"].id
    shown = ("product_id", "quantity", "price_minor", "substitution")
    assert [{k: line[k] for k in shown} for line in near_part["lines"]] == [
        {
            "product_id": world["aspirin"].id,
            "quantity": 2,
            "price_minor": 1000,
            "substitution": "allowed",  # over the counter: consent by default, as in checkout
        }
    ]
    assert [{k: line[k] for k in shown} for line in far_part["lines"]] == [
        {
            "product_id": world["saline"].id,
            "quantity": 1,
            "price_minor": 700,
            "substitution": "allowed",
        }
    ]
    for part in split["parts"]:
        assert part["fulfillment"] == "pickup"
        assert part["status"] == "awaiting_payment"
        assert part["split_order_id"] == split["id"]
        assert len(part["pickup_code"]) == 6
    # One payment, for the whole.
    assert split["total_minor"] == 2700
    assert split["payment"]["amount_minor"] == 2700
    assert near_part["payment"]["id"] == far_part["payment"]["id"] == split["payment"]["id"]
    assert stock(db, world["near_lot"]) == (5, 2)
    assert stock(db, world["far_lot"]) == (5, 1)
    # The patient reads it whole, and each part as an order.
    assert read(client, world, split["id"]).json()["parts"][1]["id"] == far_part["id"]
    part = client.get(f"{API}/orders/{far_part['id']}", headers=auth(world["far_staff"]))
    assert part.status_code == 200 and part.json()["split_order_id"] == split["id"]


def test_the_capture_releases_every_part_and_the_status_follows_the_slowest(client, db, world):
    split = placed(client, world)
    capture(client, db, split)
    assert read(client, world, split["id"]).json()["status"] == "released"

    near_id, far_id = (p["id"] for p in split["parts"])
    staff = auth(world["near_staff"])
    for step in ("prepare", "ready"):
        assert client.post(f"{API}/orders/{near_id}/{step}", headers=staff).status_code == 200
    whole = read(client, world, split["id"]).json()
    assert [p["status"] for p in whole["parts"]] == ["ready", "released"]
    assert whole["status"] == "released"

    code = split["parts"][0]["pickup_code"]
    r = client.post(f"{API}/orders/{near_id}/handover", json={"pickup_code": code}, headers=staff)
    assert r.status_code == 200, r.text
    assert read(client, world, split["id"]).json()["status"] == "released"
    far_staff = auth(world["far_staff"])
    for step in ("prepare", "ready"):
        assert client.post(f"{API}/orders/{far_id}/{step}", headers=far_staff).status_code == 200
    code = split["parts"][1]["pickup_code"]
    r = client.post(
        f"{API}/orders/{far_id}/handover", json={"pickup_code": code}, headers=far_staff
    )
    assert r.status_code == 200, r.text
    whole = read(client, world, split["id"]).json()
    assert whole["status"] == "completed"
    assert stock(db, world["near_lot"]) == (3, 0)
    assert stock(db, world["far_lot"]) == (4, 0)


def test_a_part_cancelled_after_the_capture_is_refunded_its_own_total(client, db, world):
    split = placed(client, world)
    capture(client, db, split)
    far_id = split["parts"][1]["id"]

    r = client.post(
        f"{API}/orders/{far_id}/cancel",
        json={"reason": "Not needed"},
        headers=auth(world["patient"]),
    )
    assert r.status_code == 200, r.text

    whole = read(client, world, split["id"]).json()
    assert [p["status"] for p in whole["parts"]] == ["released", "cancelled"]
    assert whole["status"] == "released"
    assert whole["total_minor"] == 2000
    assert whole["payment"]["status"] == "captured"
    assert [(r["amount_minor"], r["reason"]) for r in whole["refunds"]] == [
        (700, "order_cancelled")
    ]
    assert stock(db, world["far_lot"]) == (5, 0)  # the stock went back
    assert stock(db, world["near_lot"]) == (5, 2)  # the other part keeps its own

    near_id = split["parts"][0]["id"]
    r = client.post(
        f"{API}/orders/{near_id}/cancel", json={"reason": "Gone"}, headers=auth(world["patient"])
    )
    assert r.status_code == 200
    whole = read(client, world, split["id"]).json()
    assert whole["status"] == "cancelled"
    assert sorted(r["amount_minor"] for r in whole["refunds"]) == [700, 2000]


def test_parts_cancelled_before_the_capture(client, db, world):
    split = placed(client, world)
    near_id, far_id = (p["id"] for p in split["parts"])
    patient = auth(world["patient"])
    assert (
        client.post(f"{API}/orders/{near_id}/cancel", json={"reason": "x"}, headers=patient)
    ).status_code == 200
    # The other part still waits for the one payment...
    whole = read(client, world, split["id"]).json()
    assert whole["status"] == "awaiting_payment"
    assert whole["payment"]["status"] == "pending"
    # ...and when the money comes, the cancelled part's share goes straight back.
    capture(client, db, split)
    whole = read(client, world, split["id"]).json()
    assert [p["status"] for p in whole["parts"]] == ["cancelled", "released"]
    assert [(r["amount_minor"], r["reason"]) for r in whole["refunds"]] == [
        (2000, "captured_after_cancel")
    ]


def test_every_part_cancelled_before_the_capture_calls_the_payment_off(client, db, world):
    split = placed(client, world)
    patient = auth(world["patient"])
    for part in split["parts"]:
        r = client.post(f"{API}/orders/{part['id']}/cancel", json={"reason": "x"}, headers=patient)
        assert r.status_code == 200
    whole = read(client, world, split["id"]).json()
    assert whole["status"] == "cancelled"
    assert whole["payment"]["status"] == "cancelled"


def test_a_cart_one_store_holds_is_an_ordinary_order(client, db, world):
    make_lot(db, world["far"], world["aspirin"], on_hand=5)
    r = place(client, world)
    assert r.status_code == 201, r.text
    order = r.json()
    assert "parts" not in order
    assert order["store"]["id"] == world["far"].id
    assert order["split_order_id"] is None
    assert db.scalar(select(func.count()).select_from(SplitOrder)) == 0


def test_no_three_stores_hold_it_then_nothing_is_reserved(client, db, world):
    r = place(client, world, split_body(world, aspirin=6))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "insufficient_stock"
    assert db.scalar(select(func.count()).select_from(LotAllocation)) == 0
    assert db.scalar(select(func.count()).select_from(Order)) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"payment_method": "at_store"},
        {"store_id": 1},
        # A pickup point is served by one store's run: never a 500, never a part lost.
        {"fulfillment": "pickup_point", "pickup_point_id": 1},
    ],
)
def test_what_cannot_be_split_is_refused(client, db, world, extra):
    r = place(client, world, split_body(world, **extra))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_split"
    assert db.scalar(select(func.count()).select_from(Order)) == 0


def test_a_split_order_is_its_patients_alone(client, db, world):
    split = placed(client, world)
    assert read(client, world, split["id"], who="other").status_code == 404
    assert read(client, world, split["id"], who="near_staff").status_code == 403
    assert client.get(f"{API}/split-orders/{split['id']}").status_code == 401


def test_an_unpaid_split_order_expires_whole(client, db, world):
    split = placed(client, world)
    later = clock.now() + timedelta(minutes=get_settings().payment_minutes + 1)
    assert expire_due_orders(db, now=later) == (2, 2)
    whole = read(client, world, split["id"]).json()
    assert whole["status"] == "cancelled"
    assert whole["payment"]["status"] == "cancelled"
    assert stock(db, world["near_lot"]) == (5, 0)
    assert stock(db, world["far_lot"]) == (5, 0)


def test_a_late_part_refunds_its_own_delivery_fee_from_the_one_payment(client, db, world):
    # Both stores deliver here; each part is its own delivery with its own SLA and job.
    for store in (world["near"], world["far"]):
        store.offers_delivery = True
        store.delivery_zone = area_element(parse_area(square_zone(offset(600, 0), 3000)))
    db.flush()
    body = split_body(world) | {
        "fulfillment": "delivery",
        "delivery_address": {
            "location": dict(zip(("lat", "lon"), offset(600, 0), strict=True)),
            "text": "Room 501, 8 Example Rd",
        },
    }
    r = place(client, world, body)
    assert r.status_code == 201, r.text
    split = r.json()
    assert [p["fulfillment"] for p in split["parts"]] == ["delivery", "delivery"]
    assert split["total_minor"] == 2700 + 2 * 500
    capture(client, db, split)
    parts = read(client, world, split["id"]).json()["parts"]
    assert all(p["sla_deadline"] is not None for p in parts)
    assert all(p["delivery_code"] for p in parts)

    # Both parts late: each is compensated its own delivery fee ("late = free" per part),
    # though one payment covers them.
    deadline = max(datetime.fromisoformat(p["sla_deadline"]) for p in parts)
    monitor.run(db, now=deadline + timedelta(minutes=1))
    refunds = db.scalars(select(Refund).where(Refund.reason == "late_delivery")).all()
    assert sorted((str(r.order_id), r.amount_minor) for r in refunds) == sorted(
        (p["id"], 500) for p in parts
    )
    # Run again: nothing more for either.
    monitor.run(db, now=deadline + timedelta(minutes=2))
    assert db.scalar(select(func.count()).select_from(Refund)) == 2


def test_a_refund_for_one_part_takes_back_that_parts_points(client, db, world):
    split = placed(client, world)  # 2 x 10.00 at the near store, 1 x 7.00 at the far one
    capture(client, db, split)
    near, far = split["parts"]
    for part, staff in ((near, "near_staff"), (far, "far_staff")):
        for step in ("prepare", "ready"):
            r = client.post(f"{API}/orders/{part['id']}/{step}", headers=auth(world[staff]))
            assert r.status_code == 200, r.text
        r = client.post(
            f"{API}/orders/{part['id']}/handover",
            json={"pickup_code": part["pickup_code"]},
            headers=auth(world[staff]),
        )
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    me = f"{API}/users/me/membership"
    assert client.get(me, headers=auth(world["patient"])).json()["points"] == 27

    # The far store takes its spray back: its part's money, and that part's points, go back.
    payment = db.scalar(select(Payment).where(Payment.id == split["payment"]["id"]))
    refund = payments_service.request_refund(
        db, payment, 700, reason="returned", order_id=far["id"]
    )
    headers, raw = payment_event(db, payment.id, "refunded", amount_minor=700, refund_id=refund.id)
    assert client.post(EVENTS, content=raw, headers=headers).status_code == 200
    got = client.get(me, headers=auth(world["patient"])).json()
    assert got["points"] == 20 and got["spend_12m_minor"] == 2000
    assert (got["history"][0]["kind"], got["history"][0]["order_id"]) == ("reversal", far["id"])
