"""Scheduled runs to community pickup points: book an order on its run, put the run's job on the
board when a parcel is ready, and work the run (pick the parcels up at the store, drop them at
the point against the leader's hand-off code).

Locks run order first, then the run's job, then parcels (as `lifecycle` and the job actions do:
order before job). Marking an order ready holds its order row and only inserts the run's job
(ON CONFLICT DO NOTHING on the one-live-job-per-run index), so it never waits on a run's pickup.
"""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from dispatch.models import HELD_JOB_STATES, LIVE_JOB_STATES, Job, JobStatus
from dispatch.pool import job_not_found
from dispatch.run_models import ParcelStatus, PickupParcel, PickupRun, RunStatus
from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.security import codes_equal, new_code
from o2o.users.models import User
from stores import pickup_points
from stores.pickup_points import PickupPoint, RunSlot

S = OrderStatus
P = ParcelStatus


class WrongHandoffCode(InvalidInput):
    code = "wrong_handoff_code"


def _run_at(session: Session, point: PickupPoint, slot: RunSlot) -> PickupRun:
    """Return the run of `point` leaving at `slot.departs_at`, creating it once."""
    session.execute(
        insert(PickupRun)
        .values(
            id=uuid.uuid4(),
            point_id=point.id,
            store_id=point.store_id,
            departs_at=slot.departs_at,
            arrives_at=slot.arrives_at,
            status=RunStatus.SCHEDULED,
            handoff_code=new_code(),
        )
        .on_conflict_do_nothing(constraint="uq_pickup_runs_point_departs_at")
    )
    return session.scalar(
        select(PickupRun).where(
            PickupRun.point_id == point.id, PickupRun.departs_at == slot.departs_at
        )
    )


def book(session: Session, order: Order, point: PickupPoint, *, now: datetime) -> PickupRun:
    """Book a new pickup-point order on the next run it can make; its deadline is the arrival."""
    run = _run_at(session, point, pickup_points.run_for_new_order(session, point, now=now))
    session.add(PickupParcel(order_id=order.id, point_id=point.id, run_id=run.id, status=P.BOOKED))
    order.sla_deadline = run.arrives_at
    session.flush()
    return run


def rebook(session: Session, parcel: PickupParcel, order: Order, *, now: datetime) -> PickupRun:
    """Move a parcel that missed its run to the next run (its deadline moves with it)."""
    point = session.get(PickupPoint, parcel.point_id)
    run = _run_at(session, point, pickup_points.run_for_new_order(session, point, now=now))
    parcel.run_id = run.id
    order.sla_deadline = run.arrives_at
    session.flush()
    return run


def _ensure_job(session: Session, run: PickupRun, *, now: datetime) -> None:
    """Put the run's job on the board (once), entering it in time for the departure."""
    point = session.get(PickupPoint, run.point_id)
    lead = timedelta(minutes=get_settings().sla_courier_wait_minutes)
    session.execute(
        insert(Job)
        .values(
            id=uuid.uuid4(),
            order_id=None,
            run_id=run.id,
            store_id=run.store_id,
            dropoff=point.location,
            deadline=run.arrives_at,
            priority=0,
            status=JobStatus.OPEN,
            attempt=1,
            opened_at=max(now, run.departs_at - lead),
        )
        .on_conflict_do_nothing(
            index_elements=["run_id"],
            index_where=text("status IN ('open', 'claimed', 'picked_up', 'locked')"),
        )
    )


def on_parcel_ready(session: Session, order: Order, *, now: datetime | None = None) -> PickupRun:
    """A pickup-point order is packed: make sure its run's job is on the board.

    A parcel whose run has left already goes on the next run.
    """
    now = now or clock.now()
    parcel = session.get(PickupParcel, order.id, with_for_update=True)
    run = session.get(PickupRun, parcel.run_id)
    if run.status is not RunStatus.SCHEDULED or run.departs_at < now:
        run = rebook(session, parcel, order, now=now)
    _ensure_job(session, run, now=now)
    session.flush()
    return run


def on_order_cancelled(session: Session, order: Order, *, now: datetime | None = None) -> None:
    """Close the parcel of a cancelled order (a returned one stays returned); a run left with
    no parcel to carry leaves the board."""
    parcel = session.get(PickupParcel, order.id, with_for_update=True)
    if parcel is None or parcel.status not in (P.BOOKED, P.IN_RUN, P.AT_POINT):
        return
    was_booked = parcel.status is P.BOOKED
    parcel.status = P.CANCELLED
    session.flush()
    if not was_booked or _parcels(session, parcel.run_id, P.BOOKED):
        return
    # SKIP LOCKED: a courier claiming or picking the run up holds the job row and the order
    # rows in the other order; rather than wait (and deadlock), leave the job to them.
    job = session.scalar(
        select(Job)
        .where(Job.run_id == parcel.run_id, Job.status == JobStatus.OPEN)
        .with_for_update(skip_locked=True)
    )
    if job is not None:
        job.status = JobStatus.CANCELLED
        job.closed_at = now or clock.now()
        session.flush()


# ---------------------------------------------------------------------------------------------
# The courier works a run job


def parcel_left_store(session: Session, order_id: uuid.UUID) -> bool:
    """Whether a pickup-point order's parcel has left the store (on its run, at the point, or
    collected or returned since); False while it waits at the store or when there is none."""
    status = session.scalar(select(PickupParcel.status).where(PickupParcel.order_id == order_id))
    return status not in (None, P.BOOKED)


def is_run_job(session: Session, job_id: uuid.UUID) -> bool:
    """Say whether a job is a run to a pickup point."""
    return session.scalar(select(Job.run_id).where(Job.id == job_id)) is not None


def _held_run(session: Session, courier: User, job_id: uuid.UUID) -> tuple[PickupRun, Job]:
    """Lock a run job the courier holds and its run (run first); 404 for anyone else."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.courier_id == courier.id))
    if job is None or job.status not in HELD_JOB_STATES or job.run_id is None:
        raise job_not_found()
    run = session.get(PickupRun, job.run_id, with_for_update=True, populate_existing=True)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job.courier_id != courier.id:
        raise job_not_found()
    return run, job


def held_run_job(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Lock a run job the courier holds (and its run); 404 for anyone else."""
    return _held_run(session, courier, job_id)[1]


def _parcels(session: Session, run_id: uuid.UUID, status: ParcelStatus) -> list[PickupParcel]:
    return list(
        session.scalars(
            select(PickupParcel)
            .where(PickupParcel.run_id == run_id, PickupParcel.status == status)
            .order_by(PickupParcel.order_id)
        )
    )


def pick_up(session: Session, courier: User, job_id: uuid.UUID, *, now: datetime) -> Job:
    """Collect the run's ready parcels at the store; a parcel not ready goes on the next run."""
    run, job = _held_run(session, courier, job_id)
    if job.status is JobStatus.PICKED_UP:
        return job  # a retried pickup
    if job.status is not JobStatus.CLAIMED:
        raise Conflict("This job cannot be picked up now.", code="job_not_claimed")
    for parcel in _parcels(session, run.id, P.BOOKED):
        # Orders in id order (the parcels' order): two runs never lock orders crosswise.
        order = lifecycle.lock_order(session, parcel.order_id)
        parcel = session.get(PickupParcel, order.id, with_for_update=True, populate_existing=True)
        if parcel.status is not P.BOOKED or parcel.run_id != run.id:
            continue
        if order.status is S.READY:
            lifecycle.transition(
                session,
                order,
                S.OUT_FOR_DELIVERY,
                actor_id=courier.id,
                at=now,
                reason="On the store's run to the pickup point.",
            )
            parcel.status = P.IN_RUN
        else:
            rebook(session, parcel, order, now=now)
    run.status = RunStatus.EN_ROUTE
    job.status = JobStatus.PICKED_UP
    job.picked_up_at = now
    session.flush()
    return job


def drop_at_point(
    session: Session, courier: User, job_id: uuid.UUID, handoff_code: str, *, now: datetime
) -> Job:
    """Hand the run to the point's leader against their hand-off code: every parcel waits there
    for its patient until the hold runs out."""
    run, job = _held_run(session, courier, job_id)
    if job.status is not JobStatus.PICKED_UP:
        raise Conflict("Pick the parcels up before delivering them.", code="job_not_picked_up")
    allowed = get_settings().dispatch_code_max_failures
    if job.code_failures >= allowed:
        raise Conflict(
            "Too many wrong hand-off codes: the store handles this run now.", code="job_locked"
        )
    if not codes_equal(handoff_code.strip(), run.handoff_code):
        job.code_failures += 1
        session.flush()
        raise WrongHandoffCode(
            "The hand-off code is not the pickup point's.",
            details={"attempts_left": max(0, allowed - job.code_failures)},
        )
    point = session.get(PickupPoint, run.point_id)
    hold = timedelta(hours=get_settings().pickup_hold_hours)
    for parcel in _parcels(session, run.id, P.IN_RUN):
        order = lifecycle.lock_order(session, parcel.order_id)
        parcel = session.get(PickupParcel, order.id, with_for_update=True, populate_existing=True)
        if parcel.status is not P.IN_RUN or order.status is not S.OUT_FOR_DELIVERY:
            continue
        parcel.status = P.AT_POINT
        parcel.arrived_at = now
        parcel.hold_expires_at = now + hold
        lifecycle.transition(
            session,
            order,
            S.READY,
            actor_id=courier.id,
            at=now,
            reason=f"At the pickup point {point.name}: show your pickup code to collect it.",
        )
    run.status = RunStatus.ARRIVED
    run.arrived_at = now
    job.status = JobStatus.DELIVERED
    job.closed_at = now
    session.flush()
    return job


def run_cannot_fail() -> Conflict:
    """The 409 for reporting a failed run: the run goes to the point or is released."""
    return Conflict(
        "A run to a pickup point is delivered to the point's leader, or released before pickup.",
        code="run_cannot_fail",
    )


def live_job_of(session: Session, run_id: uuid.UUID) -> Job | None:
    """Return the run's job on the board or in a courier's hands, if any."""
    return session.scalar(select(Job).where(Job.run_id == run_id, Job.status.in_(LIVE_JOB_STATES)))
