"""A point-of-sale count below what orders hold is applied (the store's count is the truth): the
newest unpaid holds are cancelled first, then paid orders lose the stock and are flagged for the
pharmacist, who moves them to another lot or cancels them with a refund."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from o2o.order_flow.shortfall import Hold, plan
from o2o.users.models import Role
from tests.factories import (
    auth,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    pay_through,
    payment_app,
)
from tests.orders.helpers import order_body, stock

API = "/api/v1"


@pytest.fixture
def world(client, db):
    payment_app(db)
    store = make_store(db, at=offset(500, 0))
    product = make_product(db, name="Loratadine 10 mg")
    first = make_lot(db, store, product, on_hand=10, days=200, price_minor=1200)
    later = make_lot(db, store, product, on_hand=10, days=400, price_minor=1200)
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    orders = {}
    # Oldest first: A and B paid, C and D unpaid; every unit from the first-expiring lot.
    for name, qty, paid in (("A", 3, True), ("B", 3, True), ("C", 2, False), ("D", 2, False)):
        patient = make_user(db, role=Role.PATIENT)
        body = order_body([(product.id, qty)], store_id=store.id)
        r = client.post(f"{API}/orders", json=body, headers=auth(patient))
        assert r.status_code == 201, r.text
        if paid:
            assert pay_through(client, db, r.json()["id"]).status_code == 200
        orders[name] = (r.json()["id"], patient)
    assert stock(db, first) == (10, 10)
    return {
        "store": store,
        "product": product,
        "first": first,
        "later": later,
        "staff": staff,
        "orders": orders,
    }


def count_down(client, world, on_hand: int):
    lot = world["first"]
    return client.put(
        f"{API}/stores/{world['store'].id}/inventory",
        json={
            "sync_id": f"pos-{uuid.uuid4()}",
            "lots": [
                {
                    "product_id": lot.product_id,
                    "lot_number": lot.lot_number,
                    "expiry_date": lot.expiry_date.isoformat(),
                    "on_hand": on_hand,
                    "price_minor": lot.price_minor,
                    "currency": "CNY",
                }
            ],
        },
        headers=auth(world["staff"]),
    )


def order(client, world, name) -> dict:
    order_id, patient = world["orders"][name]
    return client.get(f"{API}/orders/{order_id}", headers=auth(patient)).json()


def test_a_count_below_reservations_is_applied_by_the_stated_rule(client, db, world):
    r = count_down(client, world, 3)
    assert r.status_code == 200 and r.json()["applied"] is True, r.text
    # 7 units too many held: D (2) and C (2), the newest unpaid, are cancelled; then B, the newest
    # paid, loses its 3 units and is flagged; A keeps its stock.
    assert order(client, world, "D")["status"] == "cancelled"
    assert order(client, world, "C")["status"] == "cancelled"
    assert order(client, world, "C")["payment"]["status"] == "cancelled"
    b, a = order(client, world, "B"), order(client, world, "A")
    assert b["status"] == "released" and b["stock_short_at"] is not None
    assert a["status"] == "released" and a["stock_short_at"] is None
    assert stock(db, world["first"]) == (3, 3)
    # The store may not prepare it until it is moved.
    staff = auth(world["staff"])
    r = client.post(f"{API}/orders/{b['id']}/prepare", headers=staff)
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_stock_short"
    r = client.post(f"{API}/orders/{b['id']}/reallocate", headers=staff)
    assert r.status_code == 200, r.text
    assert r.json()["stock_short_at"] is None
    assert stock(db, world["later"]) == (10, 3)
    assert client.post(f"{API}/orders/{b['id']}/prepare", headers=staff).status_code == 200
    again = client.post(f"{API}/orders/{b['id']}/reallocate", headers=staff)
    assert again.status_code == 409 and again.json()["error"]["code"] == "order_not_short"


def test_a_flagged_paid_order_cancelled_by_the_store_is_refunded(client, db, world):
    assert count_down(client, world, 0).json()["applied"] is True
    # Everything on the lot gave way: both unpaid cancelled, both paid flagged.
    flagged = [order(client, world, n) for n in ("A", "B")]
    assert all(o["stock_short_at"] for o in flagged)
    b = flagged[1]
    r = client.post(
        f"{API}/orders/{b['id']}/cancel",
        json={"reason": "Out of stock after the count"},
        headers=auth(world["staff"]),
    )
    assert r.status_code == 200, r.text
    assert [(x["amount_minor"], x["reason"]) for x in r.json()["refunds"]] == [
        (3600, "order_cancelled")
    ]
    assert stock(db, world["first"]) == (0, 0)


def test_the_rule_takes_newest_unpaid_first_then_newest_paid_only_as_needed():
    t0 = datetime(2026, 12, 5, tzinfo=UTC)
    ids = [uuid.UUID(int=n) for n in range(5)]
    holds = [
        Hold(ids[0], 3, unpaid=False, placed_at=t0),
        Hold(ids[1], 3, unpaid=False, placed_at=t0 + timedelta(minutes=1)),
        Hold(ids[2], 2, unpaid=True, placed_at=t0 + timedelta(minutes=2)),
        Hold(ids[3], 2, unpaid=True, placed_at=t0 + timedelta(minutes=3)),
    ]
    assert plan(0, holds).cancel == [] and plan(0, holds).unallocate == []
    assert plan(1, holds).cancel == [ids[3]]
    assert plan(4, holds).cancel == [ids[3], ids[2]] and plan(4, holds).unallocate == []
    assert plan(5, holds).unallocate == [(ids[1], 1)]
    assert plan(8, holds).unallocate == [(ids[1], 3), (ids[0], 1)]
    # More than all of them hold: everything gives way, and the rest is not the orders' doing.
    assert plan(99, holds).unallocate == [(ids[1], 3), (ids[0], 3)]
