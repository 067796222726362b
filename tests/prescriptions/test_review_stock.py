"""At approval the lots held for prescription items must last the whole course: short-dated
lots are swapped for longer-dated ones of the same store, or approval is refused. And the
pharmacist is warned when the patient had the same medicine dispensed within 7 days."""

from datetime import timedelta

from sqlalchemy import select

from o2o import clock
from o2o.orders.models import LotAllocation, Order, OrderLine, OrderStatus
from tests.factories import auth, make_lot, make_product
from tests.prescriptions.helpers import API, claim_and_issue, items_for, make_rx_order, request_rx


def _allocations(db, order):
    db.expire_all()
    return sorted(
        db.execute(
            select(LotAllocation.lot_id, LotAllocation.quantity)
            .join(OrderLine, OrderLine.id == LotAllocation.order_line_id)
            .where(OrderLine.order_id == order.id)
        ).all()
    )


def _review(client, world, pid):
    return client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )


def test_short_dated_lot_is_swapped_for_one_that_lasts_the_course(client, db, world):
    product = make_product(db, rx_only=True)
    short = make_lot(db, world.store, product, on_hand=5, days=40)  # ok for FEFO, not for 60 days
    long_a = make_lot(db, world.store, product, on_hand=1, days=200)
    long_b = make_lot(db, world.store, product, on_hand=5, days=300)
    elsewhere = make_lot(db, world.other_store, product, on_hand=50, days=900)
    order = make_rx_order(db, world.patient, world.store, [(product, 3, short)])
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((product, 3), duration_days=60))

    r = _review(client, world, pid)
    assert r.status_code == 200, r.text
    assert r.json()["reallocated"] == [
        {"product_id": product.id, "from_lots": [short.id], "to_lots": [long_a.id, long_b.id]}
    ]
    # FEFO among the lots that last: the earlier of the long-dated lots first.
    assert _allocations(db, order) == [(long_a.id, 1), (long_b.id, 2)]
    assert (short.reserved, long_a.reserved, long_b.reserved, elsewhere.reserved) == (0, 1, 2, 0)
    assert r.json()["order_status"] == "released"


def test_approval_is_refused_when_no_lot_lasts_the_course(client, db, world):
    product = make_product(db, rx_only=True)
    short = make_lot(db, world.store, product, on_hand=5, days=40)
    make_lot(db, world.other_store, product, on_hand=50, days=900)  # another store's stock
    order = make_rx_order(db, world.patient, world.store, [(product, 2, short)])
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((product, 2), duration_days=90))

    r = _review(client, world, pid)
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "lots_expire_before_course_end"
    assert error["details"]["items"][0]["product_id"] == product.id
    assert error["details"]["items"][0]["quantity"] == 2
    db.expire_all()
    assert db.get(Order, order.id).status is OrderStatus.AWAITING_PRESCRIPTION
    assert _allocations(db, order) == [(short.id, 2)] and short.reserved == 2


def test_lots_that_last_are_left_alone(client, db, world):
    order = world.order(db, rx_qty=2)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2), duration_days=30))
    r = _review(client, world, pid)
    assert r.status_code == 200 and r.json()["reallocated"] == []
    assert _allocations(db, order) == [(world.rx_lot.id, 2)]


def _completed_order(db, world, product, days_ago):
    lot = make_lot(db, world.store, product, on_hand=5)
    done = make_rx_order(
        db, world.patient, world.store, [(product, 1, lot)], status=OrderStatus.COMPLETED
    )
    done.completed_at = clock.now() - timedelta(days=days_ago)
    db.flush()
    return done


def test_pharmacist_is_warned_of_the_same_medicine_dispensed_within_7_days(client, db, world):
    done = _completed_order(db, world, world.rx, days_ago=3)
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.pharmacist))
    assert [w["code"] for w in r.json()["warnings"]] == ["recently_dispensed"]
    assert r.json()["warnings"][0]["order_id"] == str(done.id)
    # The patient's own view carries no warnings (they are for the pharmacist).
    assert (
        client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient)).json()["warnings"]
        == []
    )

    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    r = _review(client, world, pid)
    assert r.status_code == 200
    assert r.json()["warnings"][0]["product_id"] == world.rx.id


def test_same_generic_under_another_brand_also_warns(client, db, world):
    brand = make_product(db, rx_only=True, generic_name=world.rx.generic_name.upper())
    _completed_order(db, world, brand, days_ago=1)
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.pharmacist))
    assert len(r.json()["warnings"]) == 1


def test_no_warning_after_7_days_or_for_other_patients(client, db, world):
    _completed_order(db, world, world.rx, days_ago=8)
    other = make_rx_order(
        db,
        world.other_patient,
        world.store,
        [(world.rx, 1, world.rx_lot)],
        status=OrderStatus.COMPLETED,
    )
    other.completed_at = clock.now()
    db.flush()
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.pharmacist))
    assert r.json()["warnings"] == []
