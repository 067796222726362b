"""Store search and the nearby list: open to anyone (patients browse before signing in).

Both are hot reads, so they are async endpoints on a connection of psycopg's async pool
(`o2o.db.DriverConnection`): the nearby list's walk, the search and a split plan asked for run
their statements straight on it (`stores.statements`), with no session.
Everything runs in the event loop without a hop to the thread pool, and each answer is
serialized once, straight from the services' data to JSON bytes (no model validation on the way out: tests/stores/test_hot_reads.py
holds the answers to their documented models).
"""

from fastapi import APIRouter, Depends, Request, Response

from o2o import clock, ratelimit
from o2o.api import ApiRoute, QueryModel, data_json
from o2o.config import get_settings
from o2o.db import DriverConnection
from o2o.errors import error_responses
from o2o.i18n import gettext as _
from o2o.users.dependencies import client_ip
from stores import cart, service, split_search, substitutes
from stores.nearby import nearby_stores_async
from stores.schemas import Page
from stores.search_schemas import NearbyItemOut, NearbyQuery, SearchIn, SearchOut

router = APIRouter(route_class=ApiRoute, tags=["store search"])

# The nearby list's query, read in one pass (the hottest read).
NEARBY_QUERY = QueryModel(NearbyQuery)


@router.get(
    "/stores/nearby",
    response_model=Page[NearbyItemOut],
    summary="Stores near a point",
    responses=error_responses(e422=("invalid_radius", "invalid_cursor")),
    openapi_extra=NEARBY_QUERY.openapi(),
)
async def nearby(conn: DriverConnection, request: Request):
    """List active stores within radius_m of a point, nearest first, a page at a time."""
    query = NEARBY_QUERY.read(request)
    stores, next_cursor = await nearby_stores_async(
        conn,
        lat=query.lat,
        lon=query.lon,
        radius_m=query.radius_m,
        limit=query.limit,
        after=query.cursor,
    )
    return data_json(
        {
            "items": [
                {
                    "store": {
                        "id": s.store_id,
                        "name": s.name,
                        "address": s.address,
                        "location": s.location,
                        "timezone": s.timezone,
                        "opening_hours": s.opening_hours,
                        "services": service.services_of(s),
                        "prep_minutes": s.prep_minutes,
                        "delivery_fee_minor": s.delivery_fee_minor,
                        "currency": s.currency,
                        "is_open_now": s.is_open,
                        "opens_at": s.opens_at,
                    },
                    "distance_m": s.distance_m,
                }
                for s in stores
            ],
            "next_cursor": next_cursor,
        },
    )


async def count_search(request: Request) -> None:
    """Count a search in its address's window: one Redis round trip (the moving window's
    script), awaited, so the worker serves other requests while Redis answers. The route's own
    dependency, solved before the endpoint's: a search waiting on Redis, or refused, holds
    none of the driver pool's few connections."""
    await ratelimit.hit_async(
        ratelimit.limit(get_settings().search_rate_limit),
        "search-ip",
        client_ip(request),
        message=_("Too many searches from this address; try again in a minute."),
    )


@router.post(
    "/search/stores",
    response_model=SearchOut,
    summary="Nearest stores holding a cart",
    dependencies=[Depends(count_search)],
    responses=error_responses(
        e422=(
            "unknown_product",
            "controlled_product",
            "max_per_order_exceeded",
            "invalid_radius",
            "invalid_quantity",
            "invalid_fulfillment",
        ),
        e429="rate_limited: too many searches from this address",
    ),
)
async def search_stores(body: SearchIn, conn: DriverConnection) -> Response:
    """Find the nearest stores holding the whole cart, then those holding part of it (and, with
    allow_split, the fewest stores that hold it together when none holds it all)."""
    delivery = body.delivery_location
    delivery_point = (delivery.lat, delivery.lon) if delivery else None
    lines = [cart.CartLine(line.product_id, line.quantity) for line in body.items]
    wishes = {line.product_id: line.substitution for line in body.items}
    now = clock.now()
    where = {
        "lat": body.location.lat,
        "lon": body.location.lon,
        "lines": lines,
        "fulfillment": body.fulfillment,
        "radius_m": body.radius_m,
        "delivery_point": delivery_point,
    }
    # The search, with equivalents where they may add stores, on the driver's connection.
    matches = await substitutes.search_stores_async(
        conn, **where, wishes=wishes, limit=body.limit, now=now
    )
    # A split plan, asked for and needed, on the same connection.
    split_plan = None
    if body.allow_split and not any(m.complete for m in matches):
        split_plan = await split_search.plan_cart_async(conn, **where, now=now)
    return data_json(
        {
            "split_plan": (
                None
                if split_plan is None
                else {
                    "store_count": split_plan.store_count,
                    "parts": [
                        {
                            "store": {"id": p.store_id, "name": p.name, "location": p.location},
                            "items": [{"product_id": i, "quantity": q} for i, q in p.items],
                            "distance_m": p.distance_m,
                            "can_deliver": p.can_deliver,
                            "eta_minutes": p.eta_minutes,
                        }
                        for p in split_plan.parts
                    ],
                }
            ),
            "results": [
                {
                    "store": {"id": m.store_id, "name": m.name, "location": m.location},
                    "distance_m": m.distance_m,
                    "complete": m.complete,
                    "missing": m.missing,
                    "can_deliver": m.can_deliver,
                    "eta_minutes": m.eta_minutes,
                    "courier_wait_minutes": m.courier_wait_minutes,
                    "is_open": m.is_open,
                    "opens_at": m.opens_at,
                    "offers_pickup": m.offers_pickup,
                    "offers_delivery": m.offers_delivery,
                    "delivery_fee_minor": m.delivery_fee_minor,
                    "currency": m.currency,
                    "substitutes": m.substitutes,
                }
                for m in matches
            ],
        },
    )
