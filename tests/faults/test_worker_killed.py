"""A Celery worker killed with SIGKILL mid-task: the task is delivered again and its effect
(an expired order cancelled, its stock returned) happens once."""

import os
import signal
import time
from datetime import timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.orders.models import Order, OrderEvent, OrderStatus
from o2o.outbox import OutboxEvent
from stores.models import Lot
from tests.factories import make_lot, make_order, make_product, make_store, make_user, offset
from tests.faults.conftest import celery_worker, kill, service_env
from tests.polling import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.worker]

# Low enough that a message held by a dead worker is handed out again within seconds.
VISIBILITY_TIMEOUT_S = 10


def _expired_order(engine) -> tuple[str, int]:
    with Session(engine, expire_on_commit=False) as s:
        # The sweep's count is this test's measure: the holds other fault tests left in this
        # database (unpaid orders placed during an outage) must not fall due with this one.
        s.execute(text("UPDATE orders SET hold_expires_at = NULL"))
        store = make_store(s, at=offset(500, 0))
        lot = make_lot(s, store, make_product(s), on_hand=10)
        order = make_order(s, make_user(s), store, [(lot, 3)], rx=True)
        s.commit()
        return str(order.id), lot.id


@pytest.mark.parametrize("victim", ["pool child", "whole worker"])
def test_a_task_killed_mid_run_runs_again_and_its_effect_happens_once(
    victim, spare_pg, spare_engine, spare_redis
):
    order_id, lot_id = _expired_order(spare_engine)
    r = redis.Redis.from_url(spare_redis.url, decode_responses=True)
    env = service_env(
        spare_pg.url, spare_redis.url, O2O_TASK_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S)
    )
    # The pool child variant kills the process running the task: its parent sees the loss and
    # (task_reject_on_worker_lost) requeues the message. The whole-worker variant kills every
    # process, as a lost machine would: the broker hands the unacknowledged message to another
    # worker once the visibility timeout has passed.
    pool = ["--pool=prefork", "--concurrency=1"] if victim == "pool child" else ["--pool=solo"]
    first = celery_worker(env, "faults-worker-a", *pool)
    second = None
    try:
        producer = Celery(broker=spare_redis.url)
        hold_ran_out = clock.now() + timedelta(hours=25)
        producer.send_task("faults.expire_then_stall", args=[hold_ran_out.isoformat()])

        pid = int(wait_for(lambda: r.get("faults:expire:stalled_pid"), 60, "the first run"))
        stalled_at = time.monotonic()
        # The first run committed its effect and is now between the commit and the ack.
        assert r.lrange("faults:expire:cancelled", 0, -1) == ["1"]
        if victim == "pool child":
            assert pid != first.pid
            os.kill(pid, signal.SIGKILL)
        else:
            assert pid == first.pid
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            # The broker hands out a message left unacknowledged for longer than the visibility
            # timeout when a worker starts (and then only every tenth 10-second poll): start the
            # replacement, as a supervisor would, once the message has been held that long.
            time.sleep(max(0.0, stalled_at + VISIBILITY_TIMEOUT_S + 1 - time.monotonic()))
            second = celery_worker(env, "faults-worker-b", "--pool=solo")

        wait_for(
            lambda: r.llen("faults:expire:cancelled") >= 2,
            VISIBILITY_TIMEOUT_S + 45,
            "the task to be delivered again",
            interval=0.5,
        )
        # Delivered again, it found nothing left to do: no second cancellation.
        assert r.lrange("faults:expire:cancelled", 0, -1) == ["1", "0"]
        assert int(r.get("faults:expire:attempts")) == 2
    finally:
        kill(first, signal.SIGKILL)
        if second is not None:
            kill(second)

    with Session(spare_engine) as s:
        order = s.get(Order, order_id)
        assert order.status is OrderStatus.CANCELLED
        lot = s.get(Lot, lot_id)
        assert (lot.on_hand, lot.reserved) == (10, 0)
        cancellations = s.scalar(
            select(func.count())
            .select_from(OrderEvent)
            .where(OrderEvent.order_id == order.id, OrderEvent.to_status == OrderStatus.CANCELLED)
        )
        assert cancellations == 1
        events = s.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(
                OutboxEvent.aggregate_id == order_id,
                OutboxEvent.event_type == "order.status_changed",
            )
        )
        assert events == 1
