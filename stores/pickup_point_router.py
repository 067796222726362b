"""Pickup points API: an admin registers a store's community pickup points; anyone finds the
ones near them."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.users.dependencies import AdminUser
from stores import pickup_points, proximity
from stores.dependencies import ValidStore
from stores.pickup_point_schemas import NearbyPickupPointsOut, PickupPointIn, PickupPointOut

router = APIRouter(route_class=ApiRoute, tags=["community pickup points"])


@router.post(
    "/stores/{store_id:int}/pickup-points",
    status_code=status.HTTP_201_CREATED,
    response_model=PickupPointOut,
    summary="Register a pickup point served by the store's runs",
    responses=error_responses(
        e401="Not signed in",
        e403="Only admins may do this",
        e404="store_not_found",
        e422=(
            "invalid_leader",
            "pickup_point_too_far",
            "invalid_run_times",
            "empty_opening_interval",
            "overlapping_hours",
        ),
    ),
)
def create_pickup_point(
    store: ValidStore, body: PickupPointIn, session: DbSession, admin: AdminUser
):
    """Register a community pickup point (a leader's shop or lobby) the store's runs serve."""
    point = pickup_points.create_point(
        session,
        store,
        name=body.name,
        address=body.address,
        lat=body.location.lat,
        lon=body.location.lon,
        opening_hours=(
            [e.model_dump() for e in body.opening_hours] if body.opening_hours is not None else None
        ),
        leader_user_id=body.leader_user_id,
        commission_rate_bp=body.commission_rate_bp,
        run_times=body.run_times,
    )
    return pickup_points.point_out(session, point)


@router.get(
    "/pickup-points/nearby",
    response_model=NearbyPickupPointsOut,
    summary="Find pickup points near a place",
    responses=error_responses(e422=("invalid_radius",)),
)
def nearby_pickup_points(
    session: DbSession,
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
    radius_m: Annotated[
        float | None,
        Query(
            ge=proximity.MIN_RADIUS_M,
            le=get_settings().search_max_radius_m,
            description="Metres; default and maximum: the search maximum (50 km)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=proximity.MAX_LIMIT)] = 20,
):
    """List the active pickup points within radius_m, nearest first, each with its next run."""
    items = pickup_points.nearby_points(session, lat=lat, lon=lon, radius_m=radius_m, limit=limit)
    for item in items:
        # Who leads a point and what they earn is for the admin and the leader, not the public.
        item["pickup_point"]["leader_user_id"] = None
        item["pickup_point"]["commission_rate_bp"] = None
    return {"items": items}
