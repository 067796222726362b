"""Job actions: open a delivery attempt's job, then work a held job (pickup, delivery with the
patient's code, failure, release, unlock after a lock), and return stale claims to the pool.

Locks are always taken order first, then job (as lifecycle and the SLA monitor do), so two paths
never wait on each other in opposite order.
"""

import hmac
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dispatch import monitor, runs, views
from dispatch.models import HELD_JOB_STATES, Job, JobStatus, SlaBreach, SlaEscalation
from dispatch.pool import job_not_found
from dispatch.sla import PRIORITY_AT_RISK, PRIORITY_BREACHED, PRIORITY_NORMAL
from o2o import clock, outbox
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput, NotFound
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role, User
from stores import slots

J = JobStatus


class WrongDeliveryCode(InvalidInput):
    """A wrong delivery code: the try is counted (flushed); the caller commits it, then answers."""

    code = "wrong_delivery_code"


def new_job(session: Session, order: Order, *, attempt: int, now: datetime) -> Job:
    """Open the job of one delivery attempt of an order, in the pool from `now`."""
    deadline = order.sla_deadline or now + timedelta(minutes=get_settings().sla_minutes)
    job = Job(
        order_id=order.id,
        store_id=order.store_id,
        dropoff=order.delivery_location,
        deadline=deadline,
        priority=_priority_of(session, order.id),
        status=J.OPEN,
        attempt=attempt,
        opened_at=_opens_at(session, order, now),
    )
    session.add(job)
    session.flush()
    return job


def _opens_at(session: Session, order: Order, now: datetime) -> datetime:
    """When the job enters the pool: now, or for a scheduled delivery in time for its slot.

    A slot order ready early waits off the board until a courier taking it then (the usual
    wait for a courier, then the ride) reaches the door as the slot starts.
    """
    if order.delivery_slot_start is None:
        return now
    # Couriers see when a job enters the board: ridden from the drop-off's grid cell, not the
    # exact point, so the opening time tells no more than the board's approximate drop-off.
    cell = views.approximate_dropoff(order.delivery_location)
    _, lead = slots.courier_lead(session, order.store_id, cell)
    return max(now, order.delivery_slot_start - timedelta(minutes=lead))


def _priority_of(session: Session, order_id: uuid.UUID) -> int:
    """Keep an escalation across attempts: a re-opened job of an at-risk order stays urgent.

    As the monitor raises jobs (`dispatch.monitor`): an order flagged with a finish predicted
    within the monitor's margin of its deadline; one told early, well before it, opens as any
    other until the monitor's prediction comes that close.
    """
    if session.scalar(select(SlaBreach.id).where(SlaBreach.order_id == order_id)) is not None:
        return PRIORITY_BREACHED
    flagged = session.get(SlaEscalation, order_id)
    margin = timedelta(minutes=get_settings().sla_risk_margin_minutes)
    if flagged is not None and flagged.predicted_finish > flagged.deadline - margin:
        return PRIORITY_AT_RISK
    # A job the monitor raised on a later prediction: its next attempt keeps that priority.
    earlier = session.scalar(select(func.max(Job.priority)).where(Job.order_id == order_id))
    return max(PRIORITY_NORMAL, earlier or PRIORITY_NORMAL)


# ---------------------------------------------------------------------------------------------
# Working a held job


def _held_job(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Lock a job the courier holds and its order (order first); others get 404."""
    job = get_held_job(session, courier, job_id)
    lifecycle.lock_order(session, job.order_id)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job.courier_id != courier.id:
        raise job_not_found()
    return job


def get_held_job(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Return a job the courier holds (404 for anyone else)."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.courier_id == courier.id))
    if job is None or job.status not in HELD_JOB_STATES:
        raise job_not_found()
    return job


def my_jobs(session: Session, courier: User) -> list[Job]:
    """The jobs a courier holds now, oldest claim first."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.courier_id == courier.id, Job.status.in_(HELD_JOB_STATES))
            .order_by(Job.claimed_at, Job.id)
        )
    )


def pickup(
    session: Session, courier: User, job_id: uuid.UUID, *, now: datetime | None = None
) -> Job:
    """Collect the parcel at the store: the order goes out for delivery."""
    now = now or clock.now()
    if runs.is_run_job(session, job_id):
        return runs.pick_up(session, courier, job_id, now=now)
    job = _held_job(session, courier, job_id)
    if job.status is J.PICKED_UP:
        return job  # a retried pickup
    if job.status is not J.CLAIMED:
        raise Conflict(_("This job cannot be picked up now."), code="job_not_claimed")
    order = session.get(Order, job.order_id)
    if order.status is OrderStatus.PREPARING:
        raise Conflict(
            _("The store is still preparing this parcel; wait at the counter."),
            code="parcel_not_ready",
        )
    lifecycle.transition(session, order, OrderStatus.OUT_FOR_DELIVERY, actor_id=courier.id, at=now)
    job.status = J.PICKED_UP
    job.picked_up_at = now
    session.flush()
    return job


def deliver(
    session: Session,
    courier: User,
    job_id: uuid.UUID,
    delivery_code: str,
    *,
    now: datetime | None = None,
) -> Job:
    """Hand the parcel over against the patient's delivery code: the order completes."""
    now = now or clock.now()
    if runs.is_run_job(session, job_id):
        return runs.drop_at_point(session, courier, job_id, delivery_code, now=now)
    settings = get_settings()
    job = _held_job(session, courier, job_id)
    if job.status is J.LOCKED:
        raise Conflict(
            _("Too many wrong delivery codes: the store handles this delivery now."),
            code="job_locked",
        )
    if job.status is not J.PICKED_UP:
        raise Conflict(_("Pick the parcel up before delivering it."), code="job_not_picked_up")
    order = session.get(Order, job.order_id)
    if not hmac.compare_digest(
        delivery_code.strip().encode(), (order.delivery_code or "").encode()
    ):
        job.code_failures += 1
        left = max(0, settings.dispatch_code_max_failures - job.code_failures)
        if left == 0:
            job.status = J.LOCKED
            outbox.emit(
                session,
                "dispatch.job_locked",
                "order",
                order.id,
                {
                    "job_id": str(job.id),
                    "order_id": str(order.id),
                    "store_id": order.store_id,
                    "courier_id": courier.id,
                    "at": now.isoformat(),
                },
            )
        session.flush()
        raise WrongDeliveryCode(
            "The delivery code is not right."
            + (" The job is now locked; the store will contact you." if left == 0 else ""),
            details={"attempts_left": left},
        )
    # The hand-over time is the caller's clock (the simulation runs an accelerated one).
    lifecycle.complete(session, order, actor_id=courier.id, at=now)
    job.status = J.DELIVERED
    job.closed_at = now
    if order.sla_deadline is not None and now > order.sla_deadline:
        monitor.record_late_delivery(session, order, now=now)
    session.flush()
    return job


def fail(
    session: Session, courier: User, job_id: uuid.UUID, reason: str, *, now: datetime | None = None
) -> Job:
    """Hand a delivery back with a reason: the order returns to the store's queue.

    A new job opens at once. The order is ready again (the parcel goes back to the store), the
    SLA clock keeps running, and there is no second "mark ready" for the store to press: waiting
    for the store would only add minutes. When the redelivery's finish is predicted within the
    wide margin of the check made as a store starts (`monitor.check_promise`, 60 minutes) of the
    deadline, the patient is told the changed promise now (the SLA monitor's at-risk notice). The
    store can still cancel the order, which closes it.
    """
    now = now or clock.now()
    if runs.is_run_job(session, job_id):
        runs.held_run_job(session, courier, job_id)  # 404 unless it is the courier's
        raise runs.run_cannot_fail()
    job = _held_job(session, courier, job_id)
    if job.status is J.CLAIMED:
        raise Conflict(
            _("You have not picked this parcel up; release the job instead."),
            code="job_not_picked_up",
        )
    if job.status is not J.PICKED_UP:
        raise Conflict(_("This job cannot be failed now."), code="job_locked")
    order = session.get(Order, job.order_id)
    lifecycle.transition(
        session,
        order,
        OrderStatus.READY,
        actor_id=courier.id,
        reason=f"delivery failed: {reason}",
        at=now,
    )
    job.status = J.FAILED
    job.fail_reason = reason
    job.closed_at = now
    session.flush()
    # The parcel goes out again: a redelivery predicted close to the deadline is told to the
    # patient now, and its job opens with the priority that escalation gives it.
    monitor.check_promise(session, order, now=now)
    outbox.emit(
        session,
        "dispatch.delivery_failed",
        "order",
        order.id,
        {
            "job_id": str(job.id),
            "order_id": str(order.id),
            "store_id": order.store_id,
            "courier_id": courier.id,
            "reason": reason,
            "attempt": job.attempt,
            "at": now.isoformat(),
        },
    )
    new_job(session, order, attempt=job.attempt + 1, now=now)
    return job


def release(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Give a claimed job back to the pool (before pickup)."""
    if runs.is_run_job(session, job_id):
        job = runs.held_run_job(session, courier, job_id)
    else:
        job = _held_job(session, courier, job_id)
    if job.status is not J.CLAIMED:
        raise Conflict(
            _("The parcel is already picked up: deliver it or report the failure."),
            code="job_picked_up",
        )
    _reopen(job)
    session.flush()
    return job


def _reopen(job: Job) -> None:
    job.status = J.OPEN
    job.courier_id = None
    job.claimed_at = job.pickup_due_at = None
    # Released from a batched trip: back in the pool on its own.
    job.batch_id = job.drop_seq = job.drop_eta = None


def unlock(session: Session, staff: User, job_id: uuid.UUID) -> Job:
    """Let the courier try the delivery code again after a lock (store staff or admin)."""
    job = session.get(Job, job_id)
    if job is None or not _is_staff_of(staff, job.store_id):
        raise NotFound(_("No such job."), code="job_not_found")
    if job.run_id is not None:
        # A run is locked by its count of wrong hand-off codes, not by its status.
        job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job.code_failures < get_settings().dispatch_code_max_failures:
            raise Conflict(_("This job is not locked."), code="job_not_locked")
        job.code_failures = 0
        session.flush()
        return job
    lifecycle.lock_order(session, job.order_id)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job.status is not J.LOCKED:
        raise Conflict(_("This job is not locked."), code="job_not_locked")
    job.status = J.PICKED_UP
    job.code_failures = 0
    session.flush()
    return job


def _is_staff_of(user: User, store_id: int) -> bool:
    if user.role is Role.ADMIN:
        return True
    return user.role is Role.PHARMACIST and store_id in user.store_ids


# ---------------------------------------------------------------------------------------------
# Housekeeping (Celery beat)


def return_stale_claims(session: Session, *, now: datetime | None = None) -> int:
    """Put claims not picked up in time back in the pool (by the claim's `pickup_due_at`, and for a
    job claimed while it was prepared, within the claim timeout of the parcel's readiness);
    close jobs of cancelled orders.

    Idempotent: a second run finds nothing left to change. A courier picking up at the same
    moment holds the row lock; the UPDATE then re-checks `status = 'claimed'` and skips it.
    """
    now = now or clock.now()
    cutoff = now - timedelta(minutes=get_settings().dispatch_claim_timeout_minutes)
    returned = session.execute(
        text(
            """
            UPDATE dispatch_jobs j SET status = 'open', courier_id = NULL, claimed_at = NULL,
                   pickup_due_at = NULL, batch_id = NULL, drop_seq = NULL, drop_eta = NULL
            WHERE j.status = 'claimed' AND j.pickup_due_at < :now
              -- Claimed while the store prepared the parcel: its courier waits at the counter,
              -- and the time runs from the parcel's readiness.
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = j.order_id
                              AND (o.status = 'preparing' OR o.ready_at >= :cutoff))
            RETURNING j.id
            """
        ),
        {"now": now, "cutoff": cutoff},
    ).all()
    session.execute(
        text(
            """
            UPDATE dispatch_jobs j SET status = 'cancelled', closed_at = :now
            FROM orders o
            WHERE o.id = j.order_id AND j.status IN ('open', 'claimed')
              AND o.status = 'cancelled'
            """
        ),
        {"now": now},
    )
    session.expire_all()
    return len(returned)
