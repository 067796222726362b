"""Dispatch as the other floors reach it: a ready delivery order opens a courier job, and a
cancelled order closes its live job (subscribed to the order record's events by `o2o.wiring`).

The rest of the domain is split by job: `couriers` (profiles, positions), `pool` (visibility,
ranking, listing, claims), `actions` (working a held job, stale claims), `views`, and `routing`
(pickup or delivery, for checkout).
"""

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatch import actions, couriers, monitor
from dispatch.models import LIVE_JOB_STATES, Job, JobStatus
from o2o import clock
from o2o.config import get_settings
from o2o.errors import InvalidInput
from o2o.i18n import gettext as _
from o2o.orders.models import Fulfillment, Order
from stores.models import Store


def open_job_for_order(session: Session, order: Order, *, now: datetime | None = None) -> Job:
    """Open a delivery job for an order that became ready (returns the live job if one exists:
    opened while the order was prepared, it is on the board from now if it was due later)."""
    if order.fulfillment is not Fulfillment.DELIVERY:
        raise InvalidInput(_("Only delivery orders get courier jobs."), code="not_a_delivery")
    live = session.scalar(
        select(Job).where(Job.order_id == order.id, Job.status.in_(LIVE_JOB_STATES))
    )
    if live is not None:
        # Opened while the order was prepared, due on the board later: it is ready now.
        ready_at = order.ready_at or clock.now()
        if live.opened_at > ready_at:
            live.opened_at = ready_at
            session.flush()
        return live
    previous = session.scalar(select(func.max(Job.attempt)).where(Job.order_id == order.id))
    # The order's ready time is the job's opening time (and the clock of whoever made it ready).
    now = now or order.ready_at or clock.now()
    return actions.new_job(session, order, attempt=(previous or 0) + 1, now=now)


def open_job_while_preparing(session: Session, order: Order, *, now: datetime) -> Job | None:
    """Open the job of a delivery the store starts on, due on the board
    `dispatch_open_before_ready_minutes` before the order is due ready: its courier rides to the
    store while it is prepared. None when jobs open at ready (the setting at 0, or a slot order,
    whose job opens in time for its slot)."""
    lead = get_settings().dispatch_open_before_ready_minutes
    if lead <= 0 or order.delivery_slot_start is not None:
        return None
    prep = session.get(Store, order.store_id).prep_minutes
    opens_at = max(now, now + timedelta(minutes=prep - lead))
    return actions.new_job(session, order, attempt=1, now=opens_at)


def before_preparing(session: Session, order: Order, *, now: datetime | None = None) -> bool:
    """Check a delivery's promise as the store starts on it; tell the patient if it changed."""
    return monitor.check_promise(session, order, now=now)


def on_order_cancelled(session: Session, order: Order, *, now: datetime | None = None) -> None:
    """Close the order's live job, if any (the order was cancelled)."""
    for job in session.scalars(
        select(Job)
        .where(Job.order_id == order.id, Job.status.in_(LIVE_JOB_STATES))
        .with_for_update()
    ):
        job.status = JobStatus.CANCELLED
        job.closed_at = now or clock.now()
    session.flush()


def give_home_store(session: Session, courier_id: int, store_id: int) -> None:
    """Make a store the courier's home: its jobs are on the courier's board from the start."""
    couriers.set_courier_area(session, courier_id, home_store_id=store_id, service_area=None)
