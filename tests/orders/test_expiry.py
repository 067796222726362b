"""Holds that run out: uncollected pickups and unapproved prescriptions are cancelled and their
stock returned, exactly once, also when the sweep runs twice or two workers race."""

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from o2o import clock
from o2o.db import session_scope
from o2o.order_flow.tasks import expire_due_orders, expire_holds, expire_holds_task
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderEvent, OrderStatus
from o2o.users.models import Role
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.workflow import PrescriptionStatus
from stores.models import Lot
from tests.factories import make_lot, make_order, make_product, make_store, make_user, offset
from tests.prescriptions.helpers import request_rx

S = OrderStatus


def ready_pickup(session, patient, store, lot, qty, *, ready_at):
    order = make_order(session, patient, store, [(lot, qty)])
    lifecycle.transition(session, order, S.PREPARING, at=ready_at)
    lifecycle.transition(session, order, S.READY, at=ready_at)
    order.hold_expires_at = ready_at + timedelta(hours=48)
    session.flush()
    return order


@pytest.fixture
def world(db):
    store = make_store(db, at=offset(500, 0))
    product = make_product(db)
    return {
        "store": store,
        "lot": make_lot(db, store, product, on_hand=20),
        "patient": make_user(db, role=Role.PATIENT),
    }


def test_an_uncollected_pickup_is_cancelled_after_the_hold_and_its_stock_returns(db, world):
    now = clock.now()
    lot = world["lot"]
    stale = ready_pickup(
        db, world["patient"], world["store"], lot, 3, ready_at=now - timedelta(hours=49)
    )
    fresh = ready_pickup(
        db, world["patient"], world["store"], lot, 2, ready_at=now - timedelta(hours=47)
    )
    assert expire_due_orders(db, now=now) == (1, 1)
    db.expire_all()
    assert db.get(Order, stale.id).status is S.CANCELLED
    assert "Not collected within 48 h" in db.get(Order, stale.id).cancel_reason
    assert db.get(Order, fresh.id).status is S.READY
    assert (lot.on_hand, lot.reserved) == (20, 2)


def test_an_order_waiting_too_long_for_a_prescription_is_cancelled(db, client, world):
    rx = make_product(db, rx_only=True)
    rx_lot = make_lot(db, world["store"], rx, on_hand=5)
    now = clock.now()
    order = make_order(
        db, world["patient"], world["store"], [(rx_lot, 2)], rx=True, now=now - timedelta(hours=25)
    )
    pid = uuid.UUID(request_rx(client, world["patient"], order)["id"])
    assert expire_due_orders(db, now=now) == (1, 1)
    db.expire_all()
    assert db.get(Order, order.id).status is S.CANCELLED
    assert "No approved prescription within 24 h" in db.get(Order, order.id).cancel_reason
    # The order's open prescription request is closed with it.
    assert db.get(Prescription, pid).status is PrescriptionStatus.CANCELLED
    last_action = db.scalar(
        select(PrescriptionAudit.action)
        .where(PrescriptionAudit.prescription_id == pid)
        .order_by(PrescriptionAudit.id.desc())
        .limit(1)
    )
    assert last_action == "cancelled"
    assert (rx_lot.on_hand, rx_lot.reserved) == (5, 0)


def test_orders_without_a_running_hold_are_left_alone(db, world):
    now = clock.now()
    released = make_order(db, world["patient"], world["store"], [(world["lot"], 1)])
    # A hold left on an order that moved on (e.g. being prepared) does not cancel it.
    released.hold_expires_at = now - timedelta(hours=1)
    lifecycle.transition(db, released, S.PREPARING)
    released.hold_expires_at = now - timedelta(hours=1)
    db.flush()
    assert expire_due_orders(db, now=now) == (0, 0)
    assert db.get(Order, released.id).status is S.PREPARING


# --- real commits: run twice, two racing sweeps, a real worker -------------------------------


def _committed_world(expired: int, kept: int) -> dict:
    now = clock.now()
    with session_scope() as s:
        store = make_store(s, at=offset(500, 0))
        product = make_product(s)
        lot = make_lot(s, store, product, on_hand=50)
        patient = make_user(s, role=Role.PATIENT)
        expired_ids = [
            ready_pickup(s, patient, store, lot, 2, ready_at=now - timedelta(hours=50)).id
            for _ in range(expired)
        ]
        kept_ids = [
            ready_pickup(s, patient, store, lot, 1, ready_at=now - timedelta(hours=1)).id
            for _ in range(kept)
        ]
        return {"lot_id": lot.id, "expired": expired_ids, "kept": kept_ids}


def _state(w: dict) -> tuple[tuple[int, int], int, dict]:
    with session_scope() as s:
        lot = s.get(Lot, w["lot_id"])
        cancels = s.scalar(
            select(func.count()).select_from(OrderEvent).where(OrderEvent.to_status == S.CANCELLED)
        )
        statuses = dict(s.execute(select(Order.id, Order.status)).all())
        return (lot.on_hand, lot.reserved), cancels, statuses


def test_running_the_sweep_twice_cancels_once(committed):
    w = _committed_world(expired=3, kept=2)
    assert expire_holds() == 3
    assert expire_holds() == 0
    stock, cancels, statuses = _state(w)
    assert cancels == 3
    assert stock == (50, 2)  # only the two kept orders still hold stock
    assert all(statuses[i] is S.CANCELLED for i in w["expired"])
    assert all(statuses[i] is S.READY for i in w["kept"])


def test_two_racing_sweeps_cancel_each_order_exactly_once(committed):
    w = _committed_world(expired=12, kept=1)
    start = threading.Barrier(2)
    results: list[int] = []

    def sweep():
        start.wait()
        results.append(expire_holds(batch=4))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(results) == 12
    stock, cancels, _ = _state(w)
    assert cancels == 12
    assert stock == (50, 1)


@pytest.mark.worker
def test_the_periodic_task_expires_holds_through_a_real_worker(committed, celery_worker_process):
    w = _committed_world(expired=2, kept=1)
    assert expire_holds_task.delay().get(timeout=60) == 2
    stock, cancels, statuses = _state(w)
    assert cancels == 2 and stock == (50, 1)
    assert all(statuses[i] is S.CANCELLED for i in w["expired"])


@pytest.mark.worker
def test_a_real_worker_and_a_second_sweeper_racing_cancel_each_order_once(
    committed, celery_worker_process
):
    w = _committed_world(expired=20, kept=1)
    # The task sent twice (two beats), and a second sweeper in this process at the same time.
    sent = [expire_holds_task.delay(), expire_holds_task.delay()]
    here = expire_holds(batch=3)
    by_worker = [r.get(timeout=60) or 0 for r in sent]
    assert here + sum(by_worker) == 20
    stock, cancels, statuses = _state(w)
    assert cancels == 20
    assert stock == (50, 1)
    assert all(statuses[i] is S.CANCELLED for i in w["expired"])
    assert all(statuses[i] is S.READY for i in w["kept"])
