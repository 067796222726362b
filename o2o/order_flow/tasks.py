"""Periodic order housekeeping: holds that ran out (unpaid by the payment deadline, no approved
prescription, pickup not collected) are cancelled, stock returned, exactly once;
idempotency records past their time are purged."""

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock, idempotency
from o2o.celery_app import app
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.order_flow import store_actions
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.tasks import once_per_period

log = logging.getLogger(__name__)

S = OrderStatus
# Only these states hold stock on a timer (see `hold_expires_at`).
EXPIRING = (S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, S.READY)
EXPIRE_EVERY_S = 60
PURGE_EVERY_S = 3600


def expiry_reason(order: Order) -> str:
    """Say, for the patient's timeline, why the order was cancelled."""
    settings = get_settings()
    if order.status is S.AWAITING_PAYMENT:
        return (
            f"Not paid within {settings.payment_minutes} minutes: the reserved items went back "
            "on the shelf."
        )
    if order.status is S.AWAITING_PRESCRIPTION:
        return (
            f"No approved prescription within {settings.rx_wait_hours} h: the reserved items "
            "went back on the shelf."
        )
    return (
        f"Not collected within {settings.pickup_hold_hours} h: the reserved items went back "
        "on the shelf."
    )


def expire_due_orders(session: Session, *, now: datetime, batch: int = 200) -> tuple[int, int]:
    """Cancel up to `batch` orders whose hold ran out; return (cancelled, looked at)."""
    # SKIP LOCKED: a second sweep (two workers, a retried task) takes other rows or none, never
    # the ones this one is cancelling; the state is checked again under the lock.
    order_ids = session.scalars(
        select(Order.id)
        .where(Order.hold_expires_at <= now, Order.status.in_(EXPIRING))
        .order_by(Order.hold_expires_at, Order.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    cancelled = 0
    for order_id in order_ids:
        order = lifecycle.lock_order(session, order_id)
        if order.status not in EXPIRING or order.hold_expires_at is None:
            continue
        if order.hold_expires_at > now:
            continue
        try:
            with session.begin_nested():
                store_actions.cancel_order(
                    session, order, reason=expiry_reason(order), actor_id=None
                )
            cancelled += 1
        except Exception:
            # One bad order must not block the rest; it stays due and is retried next sweep.
            log.exception("could not expire order %s", order_id)
    return cancelled, len(order_ids)


def expire_holds(*, now: datetime | None = None, batch: int = 200, max_batches: int = 50) -> int:
    """Cancel every order whose hold ran out and return its stock; return how many."""
    total = 0
    for _ in range(max_batches):
        with session_scope() as session:
            cancelled, seen = expire_due_orders(session, now=now or clock.now(), batch=batch)
        total += cancelled
        if seen < batch:
            break
    if total:
        log.info("expired %d order holds", total)
    return total


def purge_idempotency_records(*, max_batches: int = 100) -> int:
    """Delete idempotency records whose answer is past its time; return how many."""
    total = 0
    for _ in range(max_batches):
        with session_scope() as session:
            deleted = idempotency.purge_expired(session)
        total += deleted
        if deleted == 0:
            break
    return total


@app.task(name="o2o.orders.tasks.expire_holds")
@once_per_period("orders.expire_holds", EXPIRE_EVERY_S)
def expire_holds_task() -> int:
    """Periodic: cancel orders whose payment deadline, prescription wait or pickup window ran
    out."""
    return expire_holds()


@app.task(name="o2o.orders.tasks.purge_idempotency_records")
@once_per_period("orders.purge_idempotency_records", PURGE_EVERY_S)
def purge_idempotency_records_task() -> int:
    """Periodic: forget Idempotency-Key answers older than their time to live."""
    return purge_idempotency_records()
