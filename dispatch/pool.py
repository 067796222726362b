"""The job pool: which open jobs a courier sees (area, ring, radius), how they are ranked, the
keyset-paged listing, and claims (the next best job, or one chosen job).

A claim locks the courier's profile row (one claim at a time per courier) and then one job row,
never an order, so it cannot wait on the order-then-job locks of the job actions.
"""

import enum
import functools
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from dispatch import couriers, views
from dispatch.couriers import Where
from dispatch.eta import MINUTES_PER_METRE_SQL
from dispatch.models import (
    ACTIVE_JOB_STATES,
    JOB_ORDER_TAKEABLE_SQL,
    SERVES_STORE_SQL,
    TAKEABLE_ORDER_SQL,
    Job,
    JobStatus,
)
from o2o import clock, pagination
from o2o.config import get_settings
from o2o.errors import Conflict, NotFound
from o2o.i18n import gettext as _
from o2o.users.models import User
from stores import statements
from stores.statements import Step, Steps

# Any fixed origin works for deadline buckets; it only has to be the same for every job.
_BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
JOBS_LISTING = "dispatch_jobs"


class Ranking(enum.StrEnum):
    """How the pool is ordered for a courier."""

    # Escalated first, then by deadline in buckets; within a bucket the nearest store first.
    # Deadlines only grow for new jobs, so every open job reaches the front: nothing starves.
    URGENCY = "urgency"
    # Plain first come, first served (the simulation's baseline): oldest job first.
    FIFO = "fifo"


# A fresh job is offered first to couriers near its store, and the ring widens while it waits,
# up to the radius: couriers pull, so whoever asks first takes the job, and without the ring a
# courier across town would often beat one next door (the simulation showed rides to the store
# dominating delivery times). A minute's wait costs the job little; a long ride costs minutes.
RING_START_M = 2000.0
SCHEDULE_GRACE = timedelta(minutes=1)
RING_GROWTH_M_PER_MIN = 600.0

# A job is open to a courier when it is in the pool, its order is ready or being prepared (a
# delivery's job opens a few minutes before its order is due ready), its store is the
# courier's home store or lies in their service area, and the store is within the ring. An
# escalated job's ring keeps growing past the radius, to the wide one: it still goes to couriers
# near its store first, and a courier across town, whose ride to the store alone could spend the
# time the order has left, gets it only once nobody nearer has taken it.
#
# The ring is a rule on the store's distance and the job's age, so it is turned around into one
# time per store: a job of a store d metres away is visible once it opened at or before
# `visible_from` (now minus the minutes the ring needs to grow to d; +infinity inside the first
# ring, -infinity beyond the radius, where only escalated jobs are seen). The geography work is
# then done once per store in reach (the stores' GiST index), never per job, and each store's
# open jobs are read in rank order from the partial index (store_id, priority DESC, deadline, id)
# until the first visible ones: the cost follows the stores in reach, not the size of the pool.
# Beyond the radius (visible_from is -infinity) only escalated jobs are seen, so there the scan
# is bounded to them (`_ESCALATED_ONLY`, a bound on the index's second column): it stops at the
# store's first job that is not escalated instead of reading every one of them to find none visible.
# (The stores are MATERIALIZED so each one's distance and visible_from are computed once, not
# inlined into the filter of every job row read.)
_DISTANCE = "ST_Distance(s.location, ST_GeogFromText(:point))"


def _visible_from(distance: str, *, escalated: bool = False) -> str:
    radius, growth = (
        (":wide_m", ":escalated_growth_m") if escalated else (":radius_m", ":ring_growth_m")
    )
    return f"""CASE
        WHEN {distance} <= :ring_m THEN CAST('infinity' AS timestamptz)
        WHEN {distance} <= {radius} THEN CAST(:now AS timestamptz)
            - make_interval(secs => ({distance} - :ring_m) / {growth} * 60.0)
        ELSE CAST('-infinity' AS timestamptz)
    END"""


_REACH = f"""
    SELECT d.store_id, d.distance_m,
           {_visible_from("d.distance_m")} AS visible_from,
           {_visible_from("d.distance_m", escalated=True)} AS escalated_visible_from
    FROM (
        SELECT s.id AS store_id, {_DISTANCE} AS distance_m
        FROM stores s
        JOIN couriers c ON c.user_id = :courier_id
        WHERE ST_DWithin(s.location, ST_GeogFromText(:point), :wide_m) AND {SERVES_STORE_SQL}
        -- OFFSET 0: each store's distance is measured once, not once per use in the CASEs.
        OFFSET 0
    ) AS d
"""


def _visible(visible_from: str, escalated_visible_from: str) -> str:
    # The same ring for every job; an escalated one's grows on to the wide radius.
    return (
        f"(j.opened_at <= CASE WHEN j.priority > 0 THEN {escalated_visible_from} "
        f"ELSE {visible_from} END)"
    )


# The least priority a store's visible jobs can have: 1 beyond the radius, where only escalated
# jobs are seen (the same rule as `_visible`, as a bound the index can stop at).
_ESCALATED_ONLY = "CASE WHEN r.visible_from = '-infinity' THEN 1 ELSE 0 END"
# A run to a pickup point is on the board from its opening time (its parcels are checked at pickup).
_ORDER_READY = f"(j.run_id IS NOT NULL OR {JOB_ORDER_TAKEABLE_SQL})"
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
# What a cursor of the listing holds: the last row's (priority, bucket, distance, deadline, id).
_CURSOR_READERS = (
    pagination.integer,
    pagination.timestamp,
    pagination.number,
    pagination.timestamp,
    pagination.identifier,
)


# Rows read per store: `:per_store`, or more when there are too few stores in reach to give
# `:limit` rows at that (one store in reach: `:limit` of its jobs).
_PER_STORE = (
    "greatest(CAST(:per_store AS integer), "
    "ceil(CAST(:limit AS float8) / nullif((SELECT count(*) FROM r), 0)))"
)


def _pool_sql(ranking: Ranking, *, extra: str = "") -> str:
    """Rank the jobs open to a courier: the best `_PER_STORE` of each store in reach, then the
    best `:limit` of those."""
    return f"""
        WITH r AS MATERIALIZED ({_REACH})
        SELECT p.* FROM (
            SELECT x.*, r.distance_m
            FROM r CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.deadline, j.opened_at, {_BUCKET} AS bucket
                FROM dispatch_jobs j
                WHERE j.store_id = r.store_id AND j.status = 'open'
                  AND j.priority >= {_ESCALATED_ONLY}
                  AND j.opened_at <= CAST(:opened_by AS timestamptz)
                  AND {_visible("r.visible_from", "r.escalated_visible_from")}
                  AND {_ORDER_READY} {extra}
                ORDER BY {_STORE_ORDER[ranking.value]}
                LIMIT {_PER_STORE}
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
        # A scheduled job (a delivery slot's) enters the board at its opening time; the grace
        # keeps a job opened a moment after the caller read its clock from looking scheduled.
        "opened_by": now + SCHEDULE_GRACE,
        "radius_m": radius,
        "ring_m": min(ring, radius),
        "ring_growth_m": RING_GROWTH_M_PER_MIN,
        "wide_m": max(radius, settings.dispatch_escalated_radius_m),
        "escalated_growth_m": (
            settings.dispatch_escalated_ring_growth_m_per_min
            if ranking is Ranking.URGENCY
            else math.inf
        ),
        "bucket": timedelta(minutes=settings.dispatch_deadline_bucket_minutes),
        "claim_timeout_min": float(settings.dispatch_claim_timeout_minutes),
    }


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
    couriers.configured_courier(session, courier.id)
    where = couriers.where_from(session, courier.id, lat, lon)
    params = _pool_params(courier.id, where, now=clock.now()) | {"limit": limit + 1}
    params["per_store"] = limit + 1
    extra = ""
    if cursor:
        priority, bucket, distance_m, deadline, job_id = pagination.decode_cursor(
            cursor, JOBS_LISTING, _CURSOR_READERS
        )
        params |= {"c_np": -priority, "c_b": bucket, "c_d": distance_m, "c_dl": deadline}
        params["c_id"] = job_id
        extra = _AFTER_CURSOR
    rows = session.execute(text(_pool_sql(Ranking.URGENCY, extra=extra)), params).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = pagination.encode_cursor(
            JOBS_LISTING, [last.priority, last.bucket, last.distance_m, last.deadline, last.id]
        )
    rows = rows[:limit]
    distances = {row.id: row.distance_m for row in rows}
    return views.describe_jobs(session, list(distances), distances, viewer=courier), next_cursor


# ---------------------------------------------------------------------------------------------
# Claims


# Candidates read per round of a claim. Concurrent claimers near each other see the same best
# jobs; SKIP LOCKED hands each the first one nobody else holds, and a claimer that finds all of a
# round's candidates held reads the next ones (skipping those) instead of waiting.
CLAIM_CANDIDATES = 8
# Rows a claim's first round reads from each store in reach: this many, or more when fewer than
# four stores are in reach (all eight from a lone store). The best job open to a courier is its
# store's best, so a claim nobody contends with takes exactly the best job whatever this is; it
# bounds the rows a claim reads in a city, where 40 stores may be in reach: two per store, each
# with its order's readiness, not eight. Under contention, a claimer whose first round's
# candidates are all held reads up to eight a store in the next rounds (a busy store among idle
# ones then offers as many as a lone store); in the first round it may take another store's job
# ahead of a busy store's third, escalated or not, which the next claim takes.
CLAIM_CANDIDATES_PER_STORE = 2


@functools.cache
def _claim_sql(ranking: Ranking, extra: str) -> TextClause:
    """Lock the best candidate nobody holds (the ranked candidates are read without locks) and
    mark it claimed by the courier, in one statement (built once per ranking: a rush claims
    with the same few texts). It answers the job claimed (or null), every candidate it tried
    (when none was free, they were all held, and the next round skips them) and the jobs the
    courier held before it, counted after the courier's lock: at `:max_active` or more, it reads
    no candidate and claims nothing."""
    return text(f"""
        WITH held AS MATERIALIZED ({couriers.ACTIVE_COUNT_SQL}),
        p AS MATERIALIZED (
            SELECT pool.* FROM ({_pool_sql(ranking, extra=extra)}) pool
            WHERE (SELECT jobs FROM held) < :max_active
        ),
        picked AS (
            SELECT j.id FROM dispatch_jobs j
            JOIN p ON p.id = j.id
            WHERE j.status = 'open'
            ORDER BY {_POOL_ORDER[ranking.value]}
            LIMIT 1
            FOR UPDATE OF j SKIP LOCKED
        ),
        claimed AS (
            UPDATE dispatch_jobs j
            SET status = 'claimed', courier_id = :courier_id, claimed_at = :now,
                pickup_due_at = {_PICKUP_DUE_SQL.format(ride=f"p.distance_m * {MINUTES_PER_METRE_SQL}")}
            FROM picked, p, stores s
            WHERE j.id = picked.id AND p.id = picked.id AND s.id = j.store_id
            RETURNING j.id
        )
        SELECT (SELECT id FROM claimed) AS claimed, ARRAY(SELECT id FROM p) AS candidates,
               (SELECT jobs FROM held) AS held
    """)


def claim_next_job_id(
    session: Session,
    courier_id: int,
    *,
    lat: float,
    lon: float,
    now: datetime | None = None,
    ranking: Ranking = Ranking.URGENCY,
) -> uuid.UUID | None:
    """`claim_plan` on a session: claim the best job open to the courier and return its id, or
    None when there is none."""
    now = now or clock.now()
    job_id = statements.run(
        session, claim_plan(courier_id, lat=lat, lon=lon, now=now, ranking=ranking)
    )
    if job_id is not None:
        _forget(session, job_id)
    return job_id


def claim_plan(
    courier_id: int,
    *,
    lat: float,
    lon: float,
    now: datetime,
    ranking: Ranking = Ranking.URGENCY,
) -> Steps[uuid.UUID | None]:
    """Claim the best job open to the courier; return its id, or None when there is none.

    The ranked candidates are read without locks, then the first of them nobody holds is locked
    FOR UPDATE SKIP LOCKED and claimed in the same statement: concurrent claimers each lock a
    different row instead of queueing on the same one, and a row claimed and committed meanwhile
    no longer matches `status = 'open'` when PostgreSQL re-checks it, so no job is ever claimed
    twice. Two statements in all (the courier's lock and position; the claim, which counts the
    jobs the courier holds after that lock and refuses a courier who holds the most allowed; one
    more a round when every candidate was held), the hot path of a courier rush: a plan of
    statements (`stores.statements`), run in one transaction on a session or, for the endpoint,
    on the driver's connection.
    """
    yield from couriers.hold_for_claim_plan(courier_id, lat, lon, now)
    params = _pool_params(courier_id, Where(lat, lon), now=now, ranking=ranking)
    params["limit"] = CLAIM_CANDIDATES
    params["max_active"] = get_settings().dispatch_max_active_jobs
    skipped: list[uuid.UUID] = []
    while True:
        extra = "AND j.id <> ALL(CAST(:skipped AS uuid[]))" if skipped else ""
        params["skipped"] = skipped
        params["per_store"] = CLAIM_CANDIDATES if skipped else CLAIM_CANDIDATES_PER_STORE
        ((claimed, candidates, held),) = yield Step(_claim_sql(ranking, extra), params)
        if claimed is not None:
            return claimed
        couriers.refuse_when_full(held)
        if not candidates:
            return None
        # Every candidate was held by another claimer: read past them.
        skipped = skipped + list(candidates)


def _forget(session: Session, job_id: uuid.UUID) -> None:
    # The claim marks its job in SQL: a copy the session holds is stale from here on.
    held_copy = session.identity_map.get(session.identity_key(Job, job_id))
    if held_copy is not None:
        session.expire(held_copy)


def claim_next_job(
    session: Session,
    courier: User,
    *,
    lat: float,
    lon: float,
    now: datetime | None = None,
    ranking: Ranking = Ranking.URGENCY,
) -> Job | None:
    """`claim_next_job_id`, returning the claimed job (loaded) or None."""
    job_id = claim_next_job_id(session, courier.id, lat=lat, lon=lon, now=now, ranking=ranking)
    if job_id is None:
        return None
    return session.get(Job, job_id)  # a copy the session held was expired by the claim


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
    now = now or clock.now()
    where = couriers.where_from(session, courier.id, lat, lon)
    couriers.configured_courier(session, courier.id, lock=True)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise job_not_found()
    if job.courier_id == courier.id and job.status in ACTIVE_JOB_STATES:
        return job  # a retried claim
    visible = _visible(_visible_from(_DISTANCE), _visible_from(_DISTANCE, escalated=True))
    seen = session.execute(
        text(
            f"""
            SELECT {SERVES_STORE_SQL} AS in_area,
                   (ST_DWithin(s.location, ST_GeogFromText(:point), :wide_m) AND {visible})
                       AS in_radius,
                   (j.status = 'open' AND (j.run_id IS NOT NULL OR {TAKEABLE_ORDER_SQL}))
                       AS is_open,
                   j.opened_at > CAST(:opened_by AS timestamptz) AS not_yet,
                   {_DISTANCE} * {MINUTES_PER_METRE_SQL} AS ride_minutes
            FROM dispatch_jobs j
            JOIN stores s ON s.id = j.store_id
            LEFT JOIN orders o ON o.id = j.order_id
            JOIN couriers c ON c.user_id = :courier_id
            WHERE j.id = :job_id
            """
        ),
        _pool_params(courier.id, where, now=now) | {"job_id": job_id},
    ).one()
    if not seen.in_area or seen.not_yet or (seen.is_open and not seen.in_radius):
        raise job_not_found()
    if not seen.is_open:
        raise Conflict(_("Another courier has taken this job."), code="job_taken")
    couriers.check_capacity(session, courier.id)
    if lat is not None and lon is not None:
        couriers.upsert_location(session, courier.id, lat, lon, now)
    take(job, courier.id, now, pickup_due(now, seen.ride_minutes))
    session.flush()
    return job


def take(job: Job, courier_id: int, now: datetime, pickup_due_at: datetime) -> None:
    """Mark a locked open job claimed by the courier, to be picked up by `pickup_due_at`."""
    job.status = JobStatus.CLAIMED
    job.courier_id = courier_id
    job.claimed_at = now
    job.pickup_due_at = pickup_due_at


def pickup_due(now: datetime, ride_minutes: float) -> datetime:
    """When a claim made now goes back to the pool unless its parcel is picked up: after
    `dispatch_claim_timeout_minutes`, or for a courier riding from further off (an escalated
    job reaches couriers up to the wide radius, an hour's ride away), after their ride to the
    store and half that timeout more. A fixed timeout swept such claims just before the courier
    arrived, again and again (`_PICKUP_DUE_SQL` is the same rule in SQL)."""
    timeout = get_settings().dispatch_claim_timeout_minutes
    return now + timedelta(minutes=max(timeout, ride_minutes + timeout / 2))


_PICKUP_DUE_SQL = (
    "CAST(:now AS timestamptz) + make_interval(secs => 60.0 * GREATEST("
    "CAST(:claim_timeout_min AS float8), {ride} + CAST(:claim_timeout_min AS float8) / 2))"
)


def job_not_found() -> NotFound:
    """The 404 for a job that is not open to the courier, or not theirs (one answer for both)."""
    return NotFound(_("No such job is open to you."), code="job_not_found")
