"""Courier jobs: a job opens when a delivery order is ready; couriers list and claim jobs near
them, pick up at the store, deliver with the patient's code or hand back with a reason; claims
not picked up in time return to the pool.

Locks are always taken order first, then job (as lifecycle and the SLA monitor do), so two paths
never wait on each other in opposite order.
"""

import base64
import binascii
import enum
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch import monitor
from dispatch.models import (
    ACTIVE_JOB_STATES,
    HELD_JOB_STATES,
    LIVE_JOB_STATES,
    Courier,
    Job,
    JobStatus,
    SlaBreach,
    SlaEscalation,
)
from dispatch.routing import (  # noqa: F401 (for checkout)
    Decision,
    StoreOption,
    best_delivery,
    decide,
)
from dispatch.sla import PRIORITY_AT_RISK, PRIORITY_BREACHED, PRIORITY_NORMAL
from o2o import clock, outbox, ratelimit
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput, NotFound
from o2o.geo import GeometryError, area_element, area_geojson, parse_area, point_wkt, to_latlon
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, Order, OrderStatus
from o2o.users.models import Role, User
from stores.models import Store

J = JobStatus
# Any fixed origin works for deadline buckets; it only has to be the same for every job.
_BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def now_utc() -> datetime:
    return clock.now()


class WrongDeliveryCode(InvalidInput):
    """A wrong delivery code: the try is counted (flushed); the caller commits it, then answers."""

    code = "wrong_delivery_code"


class Ranking(enum.StrEnum):
    """How the pool is ordered for a courier."""

    # Escalated first, then by deadline in buckets; within a bucket the nearest store first.
    # Deadlines only grow for new jobs, so every open job reaches the front: nothing starves.
    URGENCY = "urgency"
    # Plain first come, first served (the simulation's baseline): oldest job first.
    FIFO = "fifo"


# ---------------------------------------------------------------------------------------------
# Couriers


def get_courier(session: Session, user_id: int) -> Courier | None:
    return session.get(Courier, user_id)


def _courier_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.role is not Role.COURIER:
        raise NotFound("No such courier.", code="courier_not_found")
    return user


def set_courier_area(
    session: Session,
    user_id: int,
    *,
    home_store_id: int | None,
    service_area: dict[str, Any] | None,
) -> Courier:
    """Set where a courier works: a home store, a service area, or both (admin)."""
    _courier_user(session, user_id)
    if home_store_id is not None and session.get(Store, home_store_id) is None:
        raise InvalidInput(
            "No store has this id.", code="unknown_store", details={"home_store_id": home_store_id}
        )
    area = None
    if service_area is not None:
        try:
            area = area_element(parse_area(service_area))
        except GeometryError as exc:
            raise InvalidInput(str(exc), code="invalid_area") from None
    stmt = pg_insert(Courier).values(
        user_id=user_id, home_store_id=home_store_id, service_area=area
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Courier.user_id],
        set_={"home_store_id": home_store_id, "service_area": area, "updated_at": func.now()},
    )
    session.execute(stmt)
    return session.get(Courier, user_id, populate_existing=True)


def update_location(
    session: Session, courier: User, lat: float, lon: float, *, now: datetime | None = None
) -> Courier:
    """Record a courier's position; at most one update per window is accepted (429 beyond)."""
    settings = get_settings()
    ratelimit.hit(
        ratelimit.limit(settings.courier_location_rate_limit),
        "courier-location",
        str(courier.id),
        message="Location updates are arriving too fast; send the next one a little later.",
    )
    return _store_location(session, courier.id, lat, lon, now or now_utc())


def record_position(
    session: Session, user_id: int, lat: float, lon: float, *, now: datetime | None = None
) -> Courier:
    """Record a position from a trusted feed (no rate limit): fleet trackers, the simulation."""
    return _store_location(session, user_id, lat, lon, now or now_utc())


def _store_location(
    session: Session, user_id: int, lat: float, lon: float, now: datetime
) -> Courier:
    _upsert_location(session, user_id, lat, lon, now)
    return session.get(Courier, user_id, populate_existing=True)


def _upsert_location(session: Session, user_id: int, lat: float, lon: float, now: datetime) -> None:
    point = point_wkt(lat, lon)
    stmt = pg_insert(Courier).values(
        user_id=user_id, location=func.ST_GeogFromText(point), location_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Courier.user_id],
        set_={"location": func.ST_GeogFromText(point), "location_at": now},
    )
    session.execute(stmt)


def active_job_count(session: Session, courier_id: int) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.courier_id == courier_id, Job.status.in_(ACTIVE_JOB_STATES))
    )


def courier_profile(session: Session, user_id: int) -> dict[str, Any]:
    """Describe a courier's working profile (admin)."""
    _courier_user(session, user_id)
    courier = session.get(Courier, user_id)
    return {
        "user_id": user_id,
        "home_store_id": courier.home_store_id if courier else None,
        "service_area": area_geojson(courier.service_area) if courier else None,
        "location": to_latlon(courier.location) if courier else None,
        "location_at": courier.location_at if courier else None,
        "active_jobs": active_job_count(session, user_id),
    }


def _configured_courier(session: Session, user_id: int, *, lock: bool = False) -> Courier:
    """Load the courier's profile, refusing one with neither home store nor service area.

    With lock=True the row is locked FOR UPDATE: one claim at a time per courier, so the limit
    on active jobs holds under concurrent claims.
    """
    stmt = select(Courier).where(Courier.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    courier = session.scalar(stmt)
    if courier is None or (courier.home_store_id is None and courier.service_area is None):
        raise Conflict(
            "You have no home store or service area yet; ask an administrator to set one.",
            code="courier_not_configured",
        )
    return courier


def _check_capacity(session: Session, courier_id: int) -> None:
    limit = get_settings().dispatch_max_active_jobs
    if active_job_count(session, courier_id) >= limit:
        raise Conflict(
            f"You already hold {limit} active job(s); deliver or release one first.",
            code="too_many_jobs",
            details={"max_active_jobs": limit},
        )


# ---------------------------------------------------------------------------------------------
# Opening and closing jobs (called by the order flow)


def open_job_for_order(session: Session, order: Order, *, now: datetime | None = None) -> Job:
    """Open a delivery job for an order that became ready (returns the live job if one exists)."""
    if order.fulfillment is not Fulfillment.DELIVERY:
        raise InvalidInput("Only delivery orders get courier jobs.", code="not_a_delivery")
    live = session.scalar(
        select(Job).where(Job.order_id == order.id, Job.status.in_(LIVE_JOB_STATES))
    )
    if live is not None:
        return live
    previous = session.scalar(select(func.max(Job.attempt)).where(Job.order_id == order.id))
    # The order's ready time is the job's opening time (and the clock of whoever made it ready).
    now = now or order.ready_at or now_utc()
    return _new_job(session, order, attempt=(previous or 0) + 1, now=now)


def _new_job(session: Session, order: Order, *, attempt: int, now: datetime) -> Job:
    deadline = order.sla_deadline or now + timedelta(minutes=get_settings().sla_minutes)
    job = Job(
        order_id=order.id,
        store_id=order.store_id,
        dropoff=order.delivery_location,
        deadline=deadline,
        priority=_priority_of(session, order.id),
        status=J.OPEN,
        attempt=attempt,
        opened_at=now,
    )
    session.add(job)
    session.flush()
    return job


def _priority_of(session: Session, order_id: uuid.UUID) -> int:
    """Keep an escalation across attempts: a re-opened job of an at-risk order stays urgent."""
    if session.scalar(select(SlaBreach.id).where(SlaBreach.order_id == order_id)) is not None:
        return PRIORITY_BREACHED
    if session.get(SlaEscalation, order_id) is not None:
        return PRIORITY_AT_RISK
    return PRIORITY_NORMAL


def on_order_cancelled(session: Session, order: Order, *, now: datetime | None = None) -> None:
    """Close the order's live job, if any (the order was cancelled)."""
    for job in session.scalars(
        select(Job)
        .where(Job.order_id == order.id, Job.status.in_(LIVE_JOB_STATES))
        .with_for_update()
    ):
        job.status = J.CANCELLED
        job.closed_at = now or now_utc()
    session.flush()


# ---------------------------------------------------------------------------------------------
# The pool: visibility, listing, claiming


@dataclass(frozen=True)
class Where:
    """Where a courier is asking from, with the radii that apply."""

    lat: float
    lon: float

    @property
    def wkt(self) -> str:
        return point_wkt(self.lat, self.lon)


def _where(session: Session, courier_id: int, lat: float | None, lon: float | None) -> Where:
    if lat is not None and lon is not None:
        return Where(lat, lon)
    if (lat is None) != (lon is None):
        raise InvalidInput("Send both lat and lon, or neither.", code="location_required")
    courier = session.get(Courier, courier_id)
    last = to_latlon(courier.location) if courier is not None else None
    if last is None:
        raise InvalidInput(
            "Send your position (lat, lon): none is known yet.", code="location_required"
        )
    return Where(last["lat"], last["lon"])


# A fresh job is offered first to couriers near its store, and the ring widens while it waits,
# up to the radius: couriers pull, so whoever asks first takes the job, and without the ring a
# courier across town would often beat one next door (the simulation showed rides to the store
# dominating delivery times). A minute's wait costs the job little; a long ride costs minutes.
RING_START_M = 2000.0
RING_GROWTH_M_PER_MIN = 600.0

# A job is open to a courier when it is in the pool, its order is still ready, its store is the
# courier's home store or lies in their service area, and the store is within the ring (the wide
# radius for escalated jobs).
#
# The ring is a rule on the store's distance and the job's age, so it is turned around into one
# time per store: a job of a store d metres away is visible once it opened at or before
# `visible_from` (now minus the minutes the ring needs to grow to d; +infinity inside the first
# ring, -infinity beyond the radius, where only escalated jobs are seen). The geography work is
# then done once per store in reach (the stores' GiST index), never per job, and each store's
# open jobs are read in rank order from the partial index (store_id, priority DESC, deadline, id)
# until the first visible ones: the cost follows the stores in reach, not the size of the pool.
# (The stores are MATERIALIZED so each one's distance and visible_from are computed once, not
# inlined into the filter of every job row read.)
_IN_AREA = "(s.id = c.home_store_id OR ST_Covers(c.service_area, s.location))"
_DISTANCE = "ST_Distance(s.location, ST_GeogFromText(:point))"


def _visible_from(distance: str) -> str:
    return f"""CASE
        WHEN {distance} <= :ring_m THEN CAST('infinity' AS timestamptz)
        WHEN {distance} <= :radius_m THEN CAST(:now AS timestamptz)
            - make_interval(secs => ({distance} - :ring_m) / :ring_growth_m * 60.0)
        ELSE CAST('-infinity' AS timestamptz)
    END"""


_REACH = f"""
    SELECT s.id AS store_id, {_DISTANCE} AS distance_m, {_visible_from(_DISTANCE)} AS visible_from
    FROM stores s
    JOIN couriers c ON c.user_id = :courier_id
    WHERE ST_DWithin(s.location, ST_GeogFromText(:point), :wide_m) AND {_IN_AREA}
"""


def _visible(visible_from: str) -> str:
    # Escalated jobs skip the ring: they reach the wide radius at once.
    return f"(j.priority > 0 OR j.opened_at <= {visible_from})"


_ORDER_READY = "EXISTS (SELECT 1 FROM orders o WHERE o.id = j.order_id AND o.status = 'ready')"
_BUCKET = f"date_bin(:bucket, j.deadline, {_BUCKET_ORIGIN})"
# Within one store the rank is (priority, deadline bucket, deadline, id): the index order.
_STORE_ORDER = {
    "urgency": "j.priority DESC, j.deadline, j.id",
    "fifo": "j.opened_at, j.id",
}
_POOL_ORDER = {
    "urgency": "p.priority DESC, p.bucket, p.distance_m, p.deadline, p.id",
    "fifo": "p.opened_at, p.id",
}
# The listing's keyset: (-priority, bucket, distance, deadline, id), the order of the listing.
_AFTER_CURSOR = (
    f"AND (-j.priority, {_BUCKET}, r.distance_m, j.deadline, j.id)"
    " > (:c_np, CAST(:c_b AS timestamptz), :c_d, CAST(:c_dl AS timestamptz), :c_id)"
)


def _pool_sql(ranking: Ranking, *, extra: str = "") -> str:
    """Rank the jobs open to a courier: the best `:limit` of each store in reach, then overall."""
    return f"""
        WITH r AS MATERIALIZED ({_REACH})
        SELECT p.* FROM (
            SELECT x.*, r.distance_m
            FROM r CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.deadline, j.opened_at, {_BUCKET} AS bucket
                FROM dispatch_jobs j
                WHERE j.store_id = r.store_id AND j.status = 'open'
                  AND {_visible("r.visible_from")}
                  AND {_ORDER_READY} {extra}
                ORDER BY {_STORE_ORDER[ranking.value]}
                LIMIT :limit
            ) x
        ) p
        ORDER BY {_POOL_ORDER[ranking.value]}
        LIMIT :limit
    """


def _pool_params(
    courier_id: int, where: Where, *, now: datetime, ranking: Ranking = Ranking.URGENCY
) -> dict[str, Any]:
    settings = get_settings()
    radius = settings.dispatch_radius_m
    # The plain first-come-first-served baseline has no ring: every job reaches the radius at once.
    ring = RING_START_M if ranking is Ranking.URGENCY else radius
    return {
        "courier_id": courier_id,
        "point": where.wkt,
        "now": now,
        "radius_m": radius,
        "ring_m": min(ring, radius),
        "ring_growth_m": RING_GROWTH_M_PER_MIN,
        "wide_m": max(radius, settings.dispatch_escalated_radius_m),
        "bucket": timedelta(minutes=settings.dispatch_deadline_bucket_minutes),
    }


def _encode_cursor(row) -> str:
    raw = json.dumps(
        [
            row.priority,
            row.bucket.isoformat(),
            row.distance_m,
            row.deadline.isoformat(),
            str(row.id),
        ],
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        priority, bucket, distance_m, deadline, job_id = json.loads(raw)
        return {
            "c_np": -int(priority),
            "c_b": datetime.fromisoformat(bucket),
            "c_d": float(distance_m),
            "c_dl": datetime.fromisoformat(deadline),
            "c_id": uuid.UUID(job_id),
        }
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidInput("The cursor is not valid.", code="invalid_cursor") from None


def list_jobs(
    session: Session,
    courier: User,
    *,
    lat: float | None,
    lon: float | None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """List the jobs open to a courier, most urgent first, then nearest; keyset-paged."""
    _configured_courier(session, courier.id)
    where = _where(session, courier.id, lat, lon)
    params = _pool_params(courier.id, where, now=now_utc()) | {"limit": limit + 1}
    extra = ""
    if cursor:
        params |= _decode_cursor(cursor)
        extra = _AFTER_CURSOR
    rows = session.execute(text(_pool_sql(Ranking.URGENCY, extra=extra)), params).all()
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    distances = {row.id: row.distance_m for row in rows}
    views = describe_jobs(session, list(distances), distances)
    return views, next_cursor


# Candidates read per round of a claim. Concurrent claimers near each other see the same best
# jobs; SKIP LOCKED hands each the first one nobody else holds, and a claimer that finds all of a
# round's candidates held reads the next ones (skipping those) instead of waiting.
CLAIM_CANDIDATES = 8


def _claim_sql(ranking: Ranking, extra: str) -> str:
    """Lock the best candidate nobody holds (the ranked candidates are read without locks)."""
    return f"""
        SELECT j.id FROM dispatch_jobs j
        JOIN ({_pool_sql(ranking, extra=extra)}) p ON p.id = j.id
        WHERE j.status = 'open'
        ORDER BY {_POOL_ORDER[ranking.value]}
        LIMIT 1
        FOR UPDATE OF j SKIP LOCKED
    """


def claim_next_job(
    session: Session,
    courier: User,
    *,
    lat: float,
    lon: float,
    now: datetime | None = None,
    ranking: Ranking = Ranking.URGENCY,
) -> Job | None:
    """Claim the best job open to the courier, or return None when there is none.

    The ranked candidates are read without locks, then the first of them nobody holds is locked
    FOR UPDATE SKIP LOCKED: concurrent claimers each lock a different row instead of queueing on
    the same one, and a row claimed and committed meanwhile no longer matches `status = 'open'`
    when PostgreSQL re-checks it, so no job is ever claimed twice.
    """
    now = now or now_utc()
    _configured_courier(session, courier.id, lock=True)
    _check_capacity(session, courier.id)
    where = Where(lat, lon)
    _upsert_location(session, courier.id, lat, lon, now)
    params = _pool_params(courier.id, where, now=now, ranking=ranking)
    params["limit"] = CLAIM_CANDIDATES
    skipped: list[uuid.UUID] = []
    while True:
        extra = "AND j.id <> ALL(CAST(:skipped AS uuid[]))" if skipped else ""
        params["skipped"] = skipped
        job_id = session.scalar(text(_claim_sql(ranking, extra)), params)
        if job_id is not None:
            break
        # Every candidate was held by another claimer (or there is none): read past them.
        held = session.scalars(
            text(f"SELECT p.id FROM ({_pool_sql(ranking, extra=extra)}) p"), params
        ).all()
        if not held:
            return None
        skipped += held
    job = session.get(Job, job_id, populate_existing=True)
    _take(job, courier.id, now)
    session.flush()
    return job


def claim_job(
    session: Session,
    courier: User,
    job_id: uuid.UUID,
    *,
    lat: float | None,
    lon: float | None,
    now: datetime | None = None,
) -> Job:
    """Claim one chosen job: 404 unless it is open to the courier, 409 if someone was faster."""
    now = now or now_utc()
    where = _where(session, courier.id, lat, lon)
    _configured_courier(session, courier.id, lock=True)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise _job_not_found()
    if job.courier_id == courier.id and job.status in ACTIVE_JOB_STATES:
        return job  # a retried claim
    visible = _visible(_visible_from(_DISTANCE))
    seen = session.execute(
        text(
            f"""
            SELECT {_IN_AREA} AS in_area,
                   (ST_DWithin(s.location, ST_GeogFromText(:point), :wide_m) AND {visible})
                       AS in_radius,
                   (j.status = 'open' AND o.status = 'ready') AS is_open
            FROM dispatch_jobs j
            JOIN stores s ON s.id = j.store_id
            JOIN orders o ON o.id = j.order_id
            JOIN couriers c ON c.user_id = :courier_id
            WHERE j.id = :job_id
            """
        ),
        _pool_params(courier.id, where, now=now) | {"job_id": job_id},
    ).one()
    if not seen.in_area or (seen.is_open and not seen.in_radius):
        raise _job_not_found()
    if not seen.is_open:
        raise Conflict("Another courier has taken this job.", code="job_taken")
    _check_capacity(session, courier.id)
    if lat is not None and lon is not None:
        _upsert_location(session, courier.id, lat, lon, now)
    _take(job, courier.id, now)
    session.flush()
    return job


def _take(job: Job, courier_id: int, now: datetime) -> None:
    job.status = J.CLAIMED
    job.courier_id = courier_id
    job.claimed_at = now


def _job_not_found() -> NotFound:
    return NotFound("No such job is open to you.", code="job_not_found")


# ---------------------------------------------------------------------------------------------
# Working a held job


def _held_job(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Lock a job the courier holds and its order (order first); others get 404."""
    job = get_held_job(session, courier, job_id)
    lifecycle.lock_order(session, job.order_id)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job.courier_id != courier.id:
        raise _job_not_found()
    return job


def get_held_job(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Return a job the courier holds (404 for anyone else)."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.courier_id == courier.id))
    if job is None or job.status not in HELD_JOB_STATES:
        raise _job_not_found()
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
    now = now or now_utc()
    job = _held_job(session, courier, job_id)
    if job.status is J.PICKED_UP:
        return job  # a retried pickup
    if job.status is not J.CLAIMED:
        raise Conflict("This job cannot be picked up now.", code="job_not_claimed")
    order = session.get(Order, job.order_id)
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
    now = now or now_utc()
    settings = get_settings()
    job = _held_job(session, courier, job_id)
    if job.status is J.LOCKED:
        raise Conflict(
            "Too many wrong delivery codes: the store handles this delivery now.",
            code="job_locked",
        )
    if job.status is not J.PICKED_UP:
        raise Conflict("Pick the parcel up before delivering it.", code="job_not_picked_up")
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
    for the store would only add minutes. The store can still cancel the order, which closes it.
    """
    now = now or now_utc()
    job = _held_job(session, courier, job_id)
    if job.status is J.CLAIMED:
        raise Conflict(
            "You have not picked this parcel up; release the job instead.", code="job_not_picked_up"
        )
    if job.status is not J.PICKED_UP:
        raise Conflict("This job cannot be failed now.", code="job_locked")
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
    _new_job(session, order, attempt=job.attempt + 1, now=now)
    return job


def release(session: Session, courier: User, job_id: uuid.UUID) -> Job:
    """Give a claimed job back to the pool (before pickup)."""
    job = _held_job(session, courier, job_id)
    if job.status is not J.CLAIMED:
        raise Conflict(
            "The parcel is already picked up: deliver it or report the failure.",
            code="job_picked_up",
        )
    _reopen(job)
    session.flush()
    return job


def _reopen(job: Job) -> None:
    job.status = J.OPEN
    job.courier_id = None
    job.claimed_at = None


def unlock(session: Session, staff: User, job_id: uuid.UUID) -> Job:
    """Let the courier try the delivery code again after a lock (store staff or admin)."""
    job = session.get(Job, job_id)
    if job is None or not _is_staff_of(staff, job.store_id):
        raise NotFound("No such job.", code="job_not_found")
    lifecycle.lock_order(session, job.order_id)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job.status is not J.LOCKED:
        raise Conflict("This job is not locked.", code="job_not_locked")
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
    """Put claims not picked up in time back in the pool; close jobs of cancelled orders.

    Idempotent: a second run finds nothing left to change. A courier picking up at the same
    moment holds the row lock; the UPDATE then re-checks `status = 'claimed'` and skips it.
    """
    now = now or now_utc()
    cutoff = now - timedelta(minutes=get_settings().dispatch_claim_timeout_minutes)
    returned = session.execute(
        text(
            """
            UPDATE dispatch_jobs SET status = 'open', courier_id = NULL, claimed_at = NULL
            WHERE status = 'claimed' AND claimed_at < :cutoff
            RETURNING id
            """
        ),
        {"cutoff": cutoff},
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


# ---------------------------------------------------------------------------------------------
# Views


def describe_jobs(
    session: Session,
    job_ids: list[uuid.UUID],
    distances: dict[uuid.UUID, float | None] | None = None,
) -> list[dict[str, Any]]:
    """Build the courier's view of jobs (in the order given)."""
    if not job_ids:
        return []
    rows = session.execute(
        select(Job, Store.name, Store.location, Order.delivery_address_text)
        .join(Store, Store.id == Job.store_id)
        .join(Order, Order.id == Job.order_id)
        .where(Job.id.in_(job_ids))
    ).all()
    by_id = {row[0].id: row for row in rows}
    distances = distances or {}
    max_failures = get_settings().dispatch_code_max_failures
    views = []
    for job_id in job_ids:
        job, store_name, store_location, address_text = by_id[job_id]
        views.append(
            {
                "id": job.id,
                "order_id": job.order_id,
                "store": {
                    "id": job.store_id,
                    "name": store_name,
                    "location": to_latlon(store_location),
                },
                "dropoff": to_latlon(job.dropoff),
                "deadline": job.deadline,
                "priority": job.priority,
                "distance_m": distances.get(job_id),
                "status": job.status.value,
                "attempt": job.attempt,
                "claimed_at": job.claimed_at,
                "picked_up_at": job.picked_up_at,
                "address_text": address_text,
                "code_attempts_left": max(0, max_failures - job.code_failures),
            }
        )
    return views


def describe_job(session: Session, job: Job, where: Where | None = None) -> dict[str, Any]:
    distance = None
    if where is not None:
        distance = session.scalar(
            select(func.ST_Distance(Store.location, func.ST_GeogFromText(where.wkt))).where(
                Store.id == job.store_id
            )
        )
    return describe_jobs(session, [job.id], {job.id: distance})[0]
