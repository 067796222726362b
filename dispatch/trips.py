"""Claiming a batched trip: the best job open to the courier, then the jobs of the same store
that fit one trip with it (`dispatch.batching` decides), all claimed in one transaction.

The anchor is a plain `pool.claim_next_job` (ranked, FOR UPDATE SKIP LOCKED). Its batch-mates are
read from the same store's open jobs and locked FOR UPDATE SKIP LOCKED as well: a job another
courier is claiming is skipped, never waited for, and a job claimed and committed meanwhile no
longer matches `status = 'open'` when PostgreSQL re-checks it, so no job is ever in two trips.
The candidates the plan leaves out stay locked only until this transaction commits.
"""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dispatch import batching, couriers, pool
from dispatch.eta import EtaModel
from dispatch.models import ACTIVE_JOB_STATES, JOB_ORDER_TAKEABLE_SQL, Job, JobStatus
from dispatch.pool import Ranking
from o2o import clock
from o2o.config import get_settings
from o2o.errors import NotFound
from o2o.geo import to_latlon
from o2o.i18n import gettext as _
from o2o.users.models import User
from stores.models import Store

# Open jobs of the anchor's store looked at as batch-mates (earliest deadline first).
BATCH_CANDIDATES = 12

_MATES_SQL = text(
    f"""
    SELECT j.id, ST_Y(j.dropoff::geometry) AS lat, ST_X(j.dropoff::geometry) AS lon, j.deadline
    FROM dispatch_jobs j
    WHERE j.store_id = :store_id AND j.status = 'open' AND j.id <> :anchor
      AND j.opened_at <= CAST(:opened_by AS timestamptz)
      AND {JOB_ORDER_TAKEABLE_SQL}
    ORDER BY j.priority DESC, j.deadline, j.id
    LIMIT :limit
    FOR UPDATE OF j SKIP LOCKED
    """
)


def claim_trip(
    session: Session,
    courier: User,
    *,
    lat: float,
    lon: float,
    now: datetime | None = None,
    ranking: Ranking = Ranking.URGENCY,
) -> list[Job]:
    """Claim the best open job and the same store's jobs that fit one trip; [] when none.

    Returns the trip's jobs in drop order, each with its drop number and door time. A courier
    who already holds jobs gets one more job, unbatched (batching is for starting a trip).
    """
    now = now or clock.now()
    settings = get_settings()
    anchor = pool.claim_next_job(session, courier, lat=lat, lon=lon, now=now, ranking=ranking)
    if anchor is None:
        return []
    store = session.get(Store, anchor.store_id)
    eta = EtaModel.for_store(store)
    store_at = _point(store.location)
    held = couriers.active_job_count(session, courier.id)
    mates: list[batching.Drop] = []
    limit = settings.dispatch_batch_max_parcels - 1
    # A run to a pickup point is a trip of its own: its deadline is the run's, not a door's.
    if held == 1 and limit > 0 and anchor.run_id is None:
        mates = [
            batching.Drop(row.id, (row.lat, row.lon), row.deadline)
            for row in session.execute(
                _MATES_SQL,
                {
                    "store_id": anchor.store_id,
                    "anchor": anchor.id,
                    "opened_by": now + pool.SCHEDULE_GRACE,
                    "limit": BATCH_CANDIDATES,
                },
            )
        ]
    leaves = now + timedelta(minutes=eta.travel_minutes(batching.distance_m((lat, lon), store_at)))
    plan = batching.plan_trip(
        batching.Drop(anchor.id, _point(anchor.dropoff), anchor.deadline),
        mates,
        store=store_at,
        leaves_store=leaves,
        travel_minutes=eta.travel_minutes,
        rules=batching.Rules(
            max_parcels=settings.dispatch_batch_max_parcels,
            max_detour_minutes=settings.dispatch_batch_max_detour_minutes,
            handover_minutes=settings.sla_handover_minutes,
            deadline_margin_minutes=settings.sla_risk_margin_minutes,
        ),
    )
    batch_id = uuid.uuid4() if len(plan) > 1 else None
    jobs = []
    for drop in plan:
        job = anchor if drop.job_id == anchor.id else session.get(Job, drop.job_id)
        if job is not anchor:
            pool.take(job, courier.id, now, anchor.pickup_due_at)
        job.batch_id = batch_id
        job.drop_seq = drop.seq
        job.drop_eta = drop.eta
        jobs.append(job)
    session.flush()
    return jobs


def trip_jobs(session: Session, courier: User, batch_id: uuid.UUID) -> list[Job]:
    """Return the courier's jobs of one trip still active, in drop order (404 if none)."""
    jobs = list(
        session.scalars(
            select(Job)
            .where(
                Job.batch_id == batch_id,
                Job.courier_id == courier.id,
                Job.status.in_((*ACTIVE_JOB_STATES, JobStatus.LOCKED)),
            )
            .order_by(Job.drop_seq, Job.id)
        )
    )
    if not jobs:
        raise NotFound(_("No such trip is yours."), code="trip_not_found")
    return jobs


def _point(element) -> batching.Point:
    p = to_latlon(element)
    return p["lat"], p["lon"]
