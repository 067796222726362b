"""The ledger under real concurrency: threads on real PostgreSQL transactions handling the same
completion, the same refund confirmation, and the expiry sweep at once. Each moves points once."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from o2o import clock
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.members import service, tasks
from o2o.members.models import PointEntry
from o2o.orders.models import Order
from o2o.users.models import Role
from tests.factories import make_lot, make_product, make_store, make_user
from tests.members.helpers import completed_order

pytestmark = pytest.mark.slow

THREADS = 8


def _at_once(fn, n: int = THREADS) -> list:
    start = threading.Barrier(n)

    def run(i: int):
        start.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _entries(kind: str) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(PointEntry).where(PointEntry.kind == kind))


def test_one_completion_refund_and_expiry_handled_at_once_move_points_once(committed):
    days = get_settings().member_points_expire_days
    now = clock.now()
    with session_scope() as s:
        store = make_store(s)
        lot = make_lot(s, store, make_product(s), on_hand=100, price_minor=1000)
        patient = make_user(s, role=Role.PATIENT)
        # Completed long ago (its points are due to expire) and recently.
        completed_order(s, patient, store, [(lot, 3)], at=now - timedelta(days=days + 2))
        recent = completed_order(s, patient, store, [(lot, 5)], at=now - timedelta(days=2))
        patient_id, recent_id = patient.id, recent.id
    assert _entries("accrual") == 2

    # The completion's event delivered again by several processes at once.
    def complete_again(_: int) -> None:
        with session_scope() as s:
            service.on_order_completed(s, s.get(Order, recent_id))

    _at_once(complete_again)
    assert _entries("accrual") == 2

    # One refund confirmation (two of the five boxes) handled by several processes at once.
    refund_id = uuid.uuid4()

    def refund(_: int) -> None:
        with session_scope() as s:
            service.on_refund_settled(s, order_id=recent_id, refund_id=refund_id, paid_minor=3000)

    _at_once(refund)
    assert _entries("reversal") == 1

    # Two beats sweep at once, and again later: the old order's points expire once.
    expired = _at_once(lambda _: tasks.expire_points(now=now), 2)
    assert sorted(expired) == [0, 30]
    assert tasks.expire_points(now=now) == 0
    assert _entries("expiry") == 1
    with session_scope() as s:
        assert service.points_balance(s, patient_id) == 30  # 50 earned, 20 refunded
        m = service.membership(s, patient_id, now=now)
        assert m.spend_12m_minor == 3000
