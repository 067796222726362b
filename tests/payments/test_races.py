"""A capture and the payment deadline's expiry racing for the same orders, for real: threads on
real PostgreSQL transactions. Exactly one wins each order; the loser's effect is undone."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from o2o.db import session_scope
from o2o.order_flow import checkout
from o2o.order_flow.schemas import OrderIn
from o2o.order_flow.tasks import expire_due_orders
from o2o.orders.models import Order, OrderEvent, OrderStatus
from o2o.payments import apps, intake
from o2o.payments.models import Payment, PaymentStatus, Refund
from o2o.users.models import Role
from stores.models import Lot
from tests.factories import (
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    payment_app,
    payment_event,
)
from tests.orders.helpers import order_body

pytestmark = pytest.mark.slow

ORDERS = 12


def test_capture_racing_expiry_exactly_one_wins_each_order(committed):
    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        product = make_product(s)
        lot = make_lot(s, store, product, on_hand=100)
        payment_app(s)
        patients = [make_user(s, role=Role.PATIENT) for _ in range(ORDERS)]
        lot_id = lot.id
    order_ids, placed_at = [], None
    for patient in patients:
        with session_scope() as s:
            order = checkout.place_order(s, patient, OrderIn(**order_body([(product.id, 2)])))
            order_ids.append(order.id)
            placed_at = placed_at or order.created_at
    with session_scope() as s:
        signed = []
        for order_id in order_ids:
            payment = s.scalar(select(Payment).where(Payment.order_id == order_id))
            signed.append(payment_event(s, payment.id))
    due = placed_at + timedelta(minutes=16)
    start = threading.Barrier(2 * ORDERS)
    # Each thread starts after its own short jitter, so captures and sweeps interleave and both
    # sides win some orders.
    jitter = [random.Random(20261205 + i).random() * 0.15 for i in range(2 * ORDERS)]

    def capture(i: int) -> str:
        headers, raw = signed[i]
        start.wait()
        time.sleep(jitter[i])
        with session_scope() as s:
            got = intake.receive(
                s,
                apps.SignedHeaders(
                    headers[apps.APP_HEADER],
                    headers[apps.TIMESTAMP_HEADER],
                    headers[apps.SIGNATURE_HEADER],
                ),
                raw,
            )
            return got.outcome

    def expire(i: int) -> int:
        start.wait()
        time.sleep(jitter[ORDERS + i])
        with session_scope() as s:
            # One order per sweep, as many sweeps as orders: they interleave with the captures.
            return expire_due_orders(s, now=due, batch=1)[0]

    with ThreadPoolExecutor(max_workers=2 * ORDERS) as pool:
        captures = [pool.submit(capture, i) for i in range(ORDERS)]
        expiries = [pool.submit(expire, i) for i in range(ORDERS)]
        assert all(c.result() == "applied" for c in captures)
        expired = sum(e.result() for e in expiries)

    with session_scope() as s:
        released = cancelled = 0
        for order_id in order_ids:
            order = s.get(Order, order_id)
            payment = s.scalar(select(Payment).where(Payment.order_id == order_id))
            refunds = s.scalars(select(Refund).where(Refund.payment_id == payment.id)).all()
            moves = s.scalar(
                select(func.count())
                .select_from(OrderEvent)
                .where(
                    OrderEvent.order_id == order_id,
                    OrderEvent.from_status == OrderStatus.AWAITING_PAYMENT,
                )
            )
            # One move out of awaiting payment, by whichever came first.
            assert moves == 1
            assert payment.status is PaymentStatus.CAPTURED
            if order.status is OrderStatus.RELEASED:
                released += 1
                assert refunds == []
            else:
                # The expiry won: cancelled, stock back, and the capture refunded in full.
                assert order.status is OrderStatus.CANCELLED
                cancelled += 1
                assert [(r.amount_minor, r.reason) for r in refunds] == [
                    (payment.captured_minor, "captured_after_cancel")
                ]
        assert released + cancelled == ORDERS
        assert cancelled == expired
        lot = s.get(Lot, lot_id)
        assert lot.reserved == 2 * released


@pytest.mark.worker
def test_unpaid_orders_expire_once_through_a_real_worker_and_the_app_is_told(
    committed, celery_worker_process
):
    from o2o.order_flow.tasks import expire_holds_task
    from o2o.outbox import OutboxEvent

    with session_scope() as s:
        store = make_store(s, at=offset(400, 0))
        product = make_product(s)
        lot = make_lot(s, store, product, on_hand=10)
        payment_app(s)
        patients = [make_user(s, role=Role.PATIENT) for _ in range(3)]
        lot_id = lot.id
    order_ids = []
    for patient in patients:
        with session_scope() as s:
            order = checkout.place_order(s, patient, OrderIn(**order_body([(product.id, 2)])))
            order_ids.append(order.id)
    with session_scope() as s:
        # Two of them are past their payment deadline (the worker reads the real clock).
        for order_id in order_ids[:2]:
            order = s.get(Order, order_id)
            order.hold_expires_at = order.created_at - timedelta(minutes=1)
    sent = [expire_holds_task.delay(), expire_holds_task.delay()]
    assert sum(r.get(timeout=60) or 0 for r in sent) == 2
    with session_scope() as s:
        statuses = [s.get(Order, i).status for i in order_ids]
        assert statuses == [
            OrderStatus.CANCELLED,
            OrderStatus.CANCELLED,
            OrderStatus.AWAITING_PAYMENT,
        ]
        told = s.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.event_type == "payment.cancelled")
        ).all()
        assert sorted(p["order_id"] for p in told) == sorted(str(i) for i in order_ids[:2])
        assert s.get(Lot, lot_id).reserved == 2
