"""Dispatch API: courier location, the job pool and claims, working a job to proof of delivery,
courier areas and webhook endpoints (admin), and SLA reports."""

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from dispatch import reports, service, webhooks
from dispatch.dependencies import CourierUser, StaffOrAdmin
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
    SlaReportOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
)
from o2o import clock
from o2o.api import ApiRoute
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.geo import to_latlon
from o2o.users.dependencies import AdminUser

router = APIRouter(route_class=ApiRoute, tags=["dispatch"])

Lat = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False)]
Lon = Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False)]


# Couriers --------------------------------------------------------------------------------------


@router.put(
    "/couriers/me/location",
    response_model=CourierLocationOut,
    responses=error_responses(e429="rate_limited: one accepted update per 5 seconds"),
)
def update_my_location(body: ClaimIn, session: DbSession, courier: CourierUser):
    """Report the courier's position (at most one accepted update per 5 seconds; 429 beyond)."""
    profile = service.update_location(session, courier, body.lat, body.lon)
    return {**to_latlon(profile.location), "at": profile.location_at}


@router.get("/couriers/me/jobs", response_model=list[HeldJobOut])
def my_jobs(session: DbSession, courier: CourierUser):
    """List the jobs the courier holds now."""
    jobs = service.my_jobs(session, courier)
    return service.describe_jobs(session, [job.id for job in jobs])


# The pool --------------------------------------------------------------------------------------


@router.get("/dispatch/jobs", response_model=JobPage)
def list_jobs(
    session: DbSession,
    courier: CourierUser,
    lat: Lat = None,
    lon: Lon = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
):
    """List the jobs open to the courier: most urgent first, then the nearest store.

    Without lat/lon the courier's last reported position is used.
    """
    items, next_cursor = service.list_jobs(
        session, courier, lat=lat, lon=lon, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/dispatch/claim",
    response_model=HeldJobOut,
    responses={204: {"description": "No job is open to you right now."}},
)
def claim_next(body: ClaimIn, session: DbSession, courier: CourierUser):
    """Claim the best next job open to the courier (204 when there is none)."""
    job = service.claim_next_job(session, courier, lat=body.lat, lon=body.lon)
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return service.describe_job(session, job, service.Where(body.lat, body.lon))


@router.get("/dispatch/jobs/{job_id}", response_model=HeldJobOut)
def get_job(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Read a job the courier holds."""
    return service.describe_job(session, service.get_held_job(session, courier, job_id))


@router.post(
    "/dispatch/jobs/{job_id}/claim",
    response_model=HeldJobOut,
    responses=error_responses(e409="job_taken; too_many_active_jobs; the job is not open to you"),
)
def claim(job_id: uuid.UUID, session: DbSession, courier: CourierUser, body: ClaimIn | None = None):
    """Claim a chosen job (404 unless it is open to the courier; 409 if already taken)."""
    lat, lon = (body.lat, body.lon) if body else (None, None)
    job = service.claim_job(session, courier, job_id, lat=lat, lon=lon)
    where = service.Where(lat, lon) if body else None
    return service.describe_job(session, job, where)


# Working a job ---------------------------------------------------------------------------------


@router.post(
    "/dispatch/jobs/{job_id}/pickup",
    response_model=HeldJobOut,
    responses=error_responses(e409="job_not_claimed; already picked up"),
)
def pickup(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Collect the parcel at the store: the order goes out for delivery."""
    return service.describe_job(session, service.pickup(session, courier, job_id))


@router.post(
    "/dispatch/jobs/{job_id}/deliver",
    response_model=HeldJobOut,
    responses=error_responses(e409="job_not_picked_up; wrong code; job_locked"),
)
def deliver(job_id: uuid.UUID, body: DeliverIn, session: DbSession, courier: CourierUser):
    """Hand over against the patient's delivery code: the order completes."""
    try:
        job = service.deliver(session, courier, job_id, body.delivery_code)
    except service.WrongDeliveryCode:
        # The wrong try must count although the answer is an error: keep it, then refuse.
        session.commit()
        raise
    return service.describe_job(session, job)


@router.post(
    "/dispatch/jobs/{job_id}/fail",
    response_model=HeldJobOut,
    responses=error_responses(e409="job_not_picked_up"),
)
def fail(job_id: uuid.UUID, body: FailIn, session: DbSession, courier: CourierUser):
    """Report a failed delivery with a reason: the order goes back to the store's queue."""
    job = service.fail(session, courier, job_id, body.reason)
    return service.describe_job(session, job)


@router.post(
    "/dispatch/jobs/{job_id}/release",
    response_model=JobOut,
    responses=error_responses(e409="already picked up"),
)
def release(job_id: uuid.UUID, session: DbSession, courier: CourierUser):
    """Give a claimed job back to the pool (before pickup)."""
    return service.describe_job(session, service.release(session, courier, job_id))


@router.post(
    "/dispatch/jobs/{job_id}/unlock",
    response_model=JobOut,
    responses=error_responses(e409="job_not_locked"),
)
def unlock(job_id: uuid.UUID, session: DbSession, staff: StaffOrAdmin):
    """Let the courier try the delivery code again after a lock (store staff or admin)."""
    return service.describe_job(session, service.unlock(session, staff, job_id))


# Admin: courier areas --------------------------------------------------------------------------


@router.put("/admin/couriers/{user_id}", response_model=CourierProfileOut)
def set_courier_area(user_id: int, body: CourierProfileIn, session: DbSession, admin: AdminUser):
    """Set a courier's home store and/or service area (GeoJSON Polygon or MultiPolygon)."""
    service.set_courier_area(
        session, user_id, home_store_id=body.home_store_id, service_area=body.service_area
    )
    return service.courier_profile(session, user_id)


@router.get("/admin/couriers/{user_id}", response_model=CourierProfileOut)
def get_courier(user_id: int, session: DbSession, admin: AdminUser):
    """Read a courier's working profile."""
    return service.courier_profile(session, user_id)


# SLA reports -----------------------------------------------------------------------------------


@router.get(
    "/sla/report",
    response_model=SlaReportOut,
    tags=["sla"],
    responses=error_responses(e404="store_not_found"),
)
def sla_report(
    session: DbSession,
    user: StaffOrAdmin,
    store_id: Annotated[int, Query(ge=1)],
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


# Admin: webhooks -------------------------------------------------------------------------------


@router.post(
    "/admin/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreatedOut,
    tags=["webhooks"],
)
def create_webhook(body: WebhookIn, session: DbSession, admin: AdminUser):
    """Register a webhook endpoint; the signing secret is shown in this answer only."""
    return webhooks.create_endpoint(
        session,
        url=str(body.url),
        event_types=body.event_types,
        secret=body.secret,
        description=body.description,
    )


@router.get("/admin/webhooks", tags=["webhooks"])
def list_webhooks(session: DbSession, admin: AdminUser) -> dict:
    """List the webhook endpoints (without their secrets)."""
    items = [
        WebhookOut.model_validate(e).model_dump(mode="json")
        for e in webhooks.list_endpoints(session)
    ]
    return {"items": items, "next_cursor": None}


@router.delete(
    "/admin/webhooks/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["webhooks"]
)
def delete_webhook(endpoint_id: int, session: DbSession, admin: AdminUser):
    """Stop sending to an endpoint."""
    webhooks.deactivate_endpoint(session, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
