"""Dispatch API: courier location, the job pool and claims, working a job to proof of delivery,
courier areas (admin), and SLA reports.

Claims and releases are rate-limited per courier here, at the HTTP edge: a claim shows the exact
drop-off and address, so claim-and-release would otherwise harvest them. Trusted callers of the
service layer (the simulation, benchmarks) are not throttled.
"""

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from psycopg import AsyncConnection

from dispatch import actions, couriers, pool, reports, runs, trips, views
from dispatch.dependencies import AsyncCourierUser, CourierUser, DriverCourierUser, StaffOrAdmin
from dispatch.schemas import (
    ClaimIn,
    CourierLocationOut,
    CourierProfileIn,
    CourierProfileOut,
    DeliverIn,
    FailIn,
    HeldJobOut,
    JobOut,
    JobPage,
    ShiftIn,
    ShiftOut,
    SlaReportOut,
    TripOut,
)
from o2o import clock, ratelimit
from o2o.api import ApiRoute, CursorQuery, RowId, data_json, model_json
from o2o.config import get_settings
from o2o.db import INT4_MAX, DbSession, DriverConnection, SessionRunner
from o2o.errors import error_responses
from o2o.i18n import gettext
from o2o.users.dependencies import AdminUser
from o2o.users.models import User
from stores import statements

router = APIRouter(route_class=ApiRoute, tags=["dispatch"])

# A courier with neither home store nor service area sees no board and claims nothing.
NOT_CONFIGURED = "courier_not_configured: no home store or service area yet"

Lat = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False)]
Lon = Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False)]

CLAIMS_LIMITED = "rate_limited: too many claims by this courier (Retry-After)"
RELEASES_LIMITED = "rate_limited: too many releases by this courier (Retry-After)"


def _check_claims(courier: User) -> None:
    """Refuse a claim (429) while the courier's claims fill the window."""
    ratelimit.check(
        ratelimit.limit(get_settings().dispatch_claim_rate_limit),
        "dispatch-claims",
        str(courier.id),
        message=gettext("Too many claims in a short time; try again later."),
    )


def _count_claims(courier: User, jobs: int) -> None:
    # Only a claim that took jobs counts (one per job): polling an empty board costs nothing.
    item = ratelimit.limit(get_settings().dispatch_claim_rate_limit)
    for _ in range(jobs):
        ratelimit.record(item, "dispatch-claims", str(courier.id))


def _check_releases(courier: User) -> None:
    """Refuse a release (429) while the courier's releases fill the window."""
    ratelimit.check(
        ratelimit.limit(get_settings().dispatch_release_rate_limit),
        "dispatch-releases",
        str(courier.id),
        message=gettext("Too many releases in a short time; pick the job up or try again later."),
    )


def _count_release(courier: User) -> None:
    ratelimit.record(
        ratelimit.limit(get_settings().dispatch_release_rate_limit),
        "dispatch-releases",
        str(courier.id),
    )


# Couriers --------------------------------------------------------------------------------------


@router.put(
    "/couriers/me/location",
    response_model=CourierLocationOut,
    responses=error_responses(e429="rate_limited: one accepted update per 5 seconds"),
)
async def update_my_location(
    body: ClaimIn, courier: DriverCourierUser, conn: DriverConnection
) -> Response:
    """Report the courier's position (at most one accepted update per 5 seconds; 429 beyond)."""
    # A hot write (every courier on shift, every few seconds): counted in its window and written
    # in the event loop, on the driver's connection in autocommit (one statement, committed before
    # the answer), with no session and no hop to the thread pool.
    await couriers.count_location_report(courier.id)
    plan = couriers.report_location_plan(courier.id, body.lat, body.lon, clock.now())
    return data_json(await statements.run_async(conn, plan))


@router.put(
    "/couriers/me/shift",
    response_model=ShiftOut,
    responses=error_responses(
        e409="courier_not_configured", e422={"invalid_shift_end": "in the past"}
    ),
)
def set_my_shift(body: ShiftIn, session: DbSession, courier: CourierUser):
    """Say when the courier's shift ends: the delivery promise stops counting on them before."""
    profile = couriers.set_shift_end(session, courier, body.ends_at)
    return {"ends_at": profile.shift_ends_at}


@router.get("/couriers/me/jobs", response_model=list[HeldJobOut])
def my_jobs(session: DbSession, courier: CourierUser):
    """List the jobs the courier holds now."""
    jobs = actions.my_jobs(session, courier)
    return views.describe_jobs(session, [job.id for job in jobs], viewer=courier)


# The pool --------------------------------------------------------------------------------------


@router.get(
    "/dispatch/jobs",
    response_model=JobPage,
    responses=error_responses(e409=NOT_CONFIGURED, e422=("invalid_cursor", "location_required")),
)
async def list_jobs(
    runner: SessionRunner,
    courier: AsyncCourierUser,
    lat: Lat = None,
    lon: Lon = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorQuery = None,
):
    """List the jobs open to the courier: most urgent first, then the nearest store.

    Without lat/lon the courier's last reported position is used.
    """
    items, next_cursor = await runner.run(
        pool.list_jobs, courier, lat=lat, lon=lon, limit=limit, cursor=cursor
    )
    return model_json(JobPage.model_validate({"items": items, "next_cursor": next_cursor}))


@router.post(
    "/dispatch/claim",
    response_model=HeldJobOut,
    responses={
        204: {"description": "No job is open to you right now."},
        **error_responses(e409=f"{NOT_CONFIGURED}; too_many_jobs", e429=CLAIMS_LIMITED),
    },
)
async def claim_next(body: ClaimIn, courier: DriverCourierUser, conn: DriverConnection):
    """Claim the best next job open to the courier (204 when there is none)."""
    # A courier rush's hot path: counted before the claim in the one Redis round trip that also
    # refuses a full window (429), and given back when no job is taken, so that, as for the other
    # claims, only a claim that took a job counts; both awaited, so the worker's loop serves other
    # requests while Redis answers. The caller, the claim and its answer run in the event loop on
    # one connection of the driver's pool, with no session and no ORM statement
    # (`pool.claim_plan`, `views.describe_plan`), and are answered as JSON once. The caller comes
    # first: a token that is not valid is refused before a connection is taken.
    item = ratelimit.limit(get_settings().dispatch_claim_rate_limit)
    keys = ("dispatch-claims", str(courier.id))
    await ratelimit.hit_async(
        item, *keys, message=gettext("Too many claims in a short time; try again later.")
    )
    try:
        answer = await _claim_next(conn, courier, body)
    except BaseException:
        # Given back awaited, a cancelled request's too (it waits for Redis, at most its
        # timeout); cancelled again meanwhile, the hit stays counted, one hit of the window.
        await ratelimit.give_back_async(item, *keys)
        raise
    if answer.status_code == status.HTTP_204_NO_CONTENT:
        await ratelimit.give_back_async(item, *keys)
    return answer


async def _claim_next(conn: AsyncConnection, courier: User, body: ClaimIn) -> Response:
    # One transaction: the courier's lock, the claim and its answer, committed before the answer.
    async with conn.transaction():
        claim = pool.claim_plan(courier.id, lat=body.lat, lon=body.lon, now=clock.now())
        job_id = await statements.run_async(conn, claim)
        if job_id is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        where = couriers.Where(body.lat, body.lon)
        (view,) = await statements.run_async(
            conn, views.describe_plan([job_id], viewer=courier, where=where)
        )
    return model_json(HeldJobOut.model_validate(view))


@router.post(
    "/dispatch/trips",
    response_model=TripOut,
    responses={204: {"description": "No job is open to you right now."}}
    | error_responses(e409="too_many_jobs; courier_not_configured", e429=CLAIMS_LIMITED),
)
def claim_trip(body: ClaimIn, session: DbSession, courier: CourierUser):
    """Claim a batched trip: the best next job and the same store's jobs that fit one trip."""
    _check_claims(courier)
    jobs = trips.claim_trip(session, courier, lat=body.lat, lon=body.lon)
    if not jobs:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    _count_claims(courier, len(jobs))
    where = couriers.Where(body.lat, body.lon)
    drops = [views.describe_job(session, job, where, viewer=courier) for job in jobs]
    return {"batch_id": jobs[0].batch_id, "store": drops[0]["store"], "drops": drops}


@router.get("/dispatch/jobs/{job_id}", response_model=HeldJobOut)
def get_job(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Read a job the courier holds."""
    job = actions.get_held_job(session, courier, job_id)
    return views.describe_job(session, job, viewer=courier)


@router.post(
    "/dispatch/jobs/{job_id}/claim",
    response_model=HeldJobOut,
    responses=error_responses(
        e409=f"job_taken; too_many_jobs; the job is not open to you; {NOT_CONFIGURED}",
        e429=CLAIMS_LIMITED,
    ),
)
def claim(job_id: uuid.UUID, session: DbSession, courier: CourierUser, body: ClaimIn | None = None):
    """Claim a chosen job (404 unless it is open to the courier; 409 if already taken)."""
    _check_claims(courier)
    lat, lon = (body.lat, body.lon) if body else (None, None)
    job = pool.claim_job(session, courier, job_id, lat=lat, lon=lon)
    _count_claims(courier, 1)
    where = couriers.Where(lat, lon) if body else None
    return views.describe_job(session, job, where, viewer=courier)


# Working a job ---------------------------------------------------------------------------------


@router.post(
    "/dispatch/jobs/{job_id}/pickup",
    response_model=HeldJobOut,
    responses=error_responses(
        e409="job_not_claimed; parcel_not_ready (claimed while the store prepares it: wait at "
        "the counter)"
    ),
)
def pickup(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Collect the parcel at the store: the order goes out for delivery."""
    return views.describe_job(session, actions.pickup(session, courier, job_id), viewer=courier)


@router.post(
    "/dispatch/jobs/{job_id}/deliver",
    response_model=HeldJobOut,
    responses=error_responses(
        e422=("wrong_delivery_code", "wrong_handoff_code"),
        e409="job_not_picked_up; wrong code; job_locked",
    ),
)
def deliver(job_id: uuid.UUID, body: DeliverIn, session: DbSession, courier: CourierUser):
    """Hand over against the patient's delivery code: the order completes. A run to a pickup
    point is handed to the point's leader against the point's hand-off code."""
    try:
        job = actions.deliver(session, courier, job_id, body.delivery_code)
    except (actions.WrongDeliveryCode, runs.WrongHandoffCode):
        # The wrong try must count although the answer is an error: keep it, then refuse.
        session.commit()
        raise
    return views.describe_job(session, job, viewer=courier)


@router.post(
    "/dispatch/jobs/{job_id}/fail",
    response_model=HeldJobOut,
    responses=error_responses(
        e409="job_not_picked_up, run_cannot_fail (a run to a pickup point: deliver or release it)"
    ),
)
def fail(job_id: uuid.UUID, body: FailIn, session: DbSession, courier: CourierUser):
    """Report a failed delivery with a reason: the order goes back to the store's queue."""
    job = actions.fail(session, courier, job_id, body.reason)
    return views.describe_job(session, job, viewer=courier)


@router.post(
    "/dispatch/jobs/{job_id}/release",
    response_model=JobOut,
    responses=error_responses(e409="already picked up", e429=RELEASES_LIMITED),
)
def release(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Give a claimed job back to the pool (before pickup); it shows the approximate drop-off."""
    _check_releases(courier)
    job = actions.release(session, courier, job_id)
    _count_release(courier)
    return views.describe_job(session, job, viewer=courier)


@router.post(
    "/dispatch/jobs/{job_id}/unlock",
    response_model=JobOut,
    responses=error_responses(e409="job_not_locked"),
)
def unlock(job_id: uuid.UUID, session: DbSession, staff: StaffOrAdmin):
    """Let the courier try the delivery code again after a lock (store staff or admin)."""
    return views.describe_job(session, actions.unlock(session, staff, job_id), viewer=staff)


# Admin: courier areas --------------------------------------------------------------------------


@router.put(
    "/admin/couriers/{user_id}",
    response_model=CourierProfileOut,
    responses=error_responses(e422=("invalid_area", "unknown_store")),
)
def set_courier_area(user_id: RowId, body: CourierProfileIn, session: DbSession, admin: AdminUser):
    """Set a courier's home store and/or service area (GeoJSON Polygon or MultiPolygon)."""
    couriers.set_courier_area(
        session, user_id, home_store_id=body.home_store_id, service_area=body.service_area
    )
    return couriers.courier_profile(session, user_id)


@router.get("/admin/couriers/{user_id}", response_model=CourierProfileOut)
def get_courier(user_id: RowId, session: DbSession, admin: AdminUser):
    """Read a courier's working profile."""
    return couriers.courier_profile(session, user_id)


# SLA reports -----------------------------------------------------------------------------------


@router.get(
    "/sla/report",
    response_model=SlaReportOut,
    tags=["sla"],
    responses=error_responses(e422=("invalid_period",), e404="store_not_found"),
)
def sla_report(
    session: DbSession,
    user: StaffOrAdmin,
    store_id: Annotated[int, Query(ge=1, le=INT4_MAX)],
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: Annotated[datetime | None, Query()] = None,
):
    """On-time rate, p50/p95 minutes from release to hand-over, and breaches of one store.

    The period is [from, to); by default the last 7 days.
    """
    store = reports.check_access(session, user, store_id)
    to = to or clock.now()
    from_ = from_ or to - timedelta(days=7)
    return reports.sla_report(session, store, from_=from_, to=to)
