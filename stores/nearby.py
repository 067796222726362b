"""Stores near a point, nearest first, a page at a time (the list patients browse).

Distances are exact (spheroid); the list streams stores along the GiST index in sphere order and
fetches more until the page is proven final (see `stores.proximity`). Pages are keyset-paged on
(distance, id), so they stay stable while stores are added.
"""

import hashlib
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from o2o import clock, pagination
from stores import hours, proximity
from stores.proximity import POINT_SQL


@dataclass(slots=True)
class NearbyStore:
    """A store near a point, with what a patient sees before choosing it."""

    store_id: int
    name: str
    address: str
    location: dict[str, float]
    timezone: str
    opening_hours: list | None
    offers_pickup: bool
    offers_delivery: bool
    prep_minutes: int
    delivery_fee_minor: int
    currency: str
    is_open: bool
    opens_at: datetime | None
    distance_m: float


# Plan: Limit <- Index Scan idx_stores_location ordered by `location <-> point`, filtered by
# the keyset; as in the search walk, stores beyond :cutoff_m come back as markers that end it.
_NEARBY_SQL = text(
    f"""
SELECT s.store_id, s.name, s.address, s.lat, s.lon, s.timezone, s.opening_hours,
       s.offers_pickup, s.offers_delivery, s.prep_minutes, s.delivery_fee_minor, s.currency,
       s.distance_m, s.sphere_m, s.sphere_m <= :cutoff_m AND s.distance_m <= :radius_m AS matched
FROM (
    SELECT s.id AS store_id, s.name, s.address, ST_Y(s.location::geometry) AS lat,
           ST_X(s.location::geometry) AS lon, s.timezone, s.opening_hours::text AS opening_hours,
           s.offers_pickup,
           s.offers_delivery, s.prep_minutes, s.delivery_fee_minor, s.currency,
           ST_Distance(s.location, {POINT_SQL}) AS distance_m, s.location <-> {POINT_SQL} AS sphere_m
    FROM stores AS s
    WHERE s.is_active
    ORDER BY s.location <-> {POINT_SQL}
    OFFSET 0
) AS s
WHERE s.sphere_m > :cutoff_m
   OR (s.distance_m <= :radius_m AND (s.distance_m, s.store_id) > (:after_distance, :after_id))
LIMIT :want
"""
)


_NEARBY_DRIVER_SQL = proximity.driver_sql(_NEARBY_SQL)


def _listing(lat: float, lon: float, radius_m: float) -> str:
    """Name the list a cursor belongs to: a cursor from another location or radius would
    silently skip or repeat stores, so the codec refuses it."""
    key = hashlib.sha256(f"{lat!r},{lon!r},{radius_m!r}".encode()).hexdigest()[:12]
    return f"nearby:{key}"


Page = tuple[list[NearbyStore], str | None]
# A page's walks: each step yields the walk's parameters, is sent its rows, and returns the page.
Walks = Generator[dict, Sequence[Any], Page]


def _walks(
    *, lat: float, lon: float, radius_m: float | None, limit: int, after: str | None, now: datetime
) -> Walks:
    """Plan a page of the nearby list as walks, whoever runs them (no I/O here)."""
    proximity.check_point(lat, lon, "location")
    radius = proximity.search_radius(radius_m)
    proximity.check_limit(limit)
    listing = _listing(lat, lon, radius)
    # Keyset (distance_m, id): stable across pages even when stores are added in between.
    after_distance, after_id = (
        pagination.decode_cursor(after, listing, (pagination.number, pagination.integer))
        if after
        else (-1.0, 0)
    )
    params = {
        "lat": lat,
        "lon": lon,
        "radius_m": radius,
        "cutoff_m": proximity.sphere_cutoff(radius),
        "after_distance": after_distance,
        "after_id": after_id,
    }
    # One more than the page tells whether another page follows.
    k = limit + 1
    want = 2 * k + 2
    while True:
        rows = yield {**params, "want": want}
        best = sorted((r for r in rows if r.matched), key=proximity.sort_key)
        last_sphere_m = max((r.sphere_m for r in rows), default=math.inf)
        if len(rows) < want or last_sphere_m > params["cutoff_m"]:
            break  # every store in the radius was seen
        if proximity.proven(best, k, last_sphere_m):
            break
        want *= 2
    page = best[:limit]
    next_cursor = None
    if len(best) > limit:
        last = page[-1]
        next_cursor = pagination.encode_cursor(listing, [last.distance_m, last.store_id])
    # Stores share a few weeks of hours and a city one zone: each pair's state is worked out once.
    open_states: dict[tuple[str | None, str], tuple[bool, datetime | None]] = {}
    return [_to_nearby(row, now, open_states) for row in page], next_cursor


def nearby_stores(
    session: Session,
    *,
    lat: float,
    lon: float,
    radius_m: float | None,
    limit: int,
    after: str | None = None,
    now: datetime | None = None,
) -> Page:
    """List active stores within radius_m, nearest first; return a page and the next cursor."""
    walks = _walks(
        lat=lat, lon=lon, radius_m=radius_m, limit=limit, after=after, now=now or clock.now()
    )
    params = next(walks)
    while True:
        try:
            params = walks.send(proximity.walk(session, _NEARBY_SQL, params))
        except StopIteration as done:
            return done.value


async def nearby_stores_async(
    conn: AsyncConnection,
    *,
    lat: float,
    lon: float,
    radius_m: float | None,
    limit: int,
    after: str | None = None,
) -> Page:
    """`nearby_stores` on the driver's async connection, opening its transaction: the nearby
    list is the hottest read, and this skips the ORM's per-statement work and the hand-over to
    sync code (the same walks, the same answer: tests/stores/test_hot_reads.py)."""
    walks = _walks(lat=lat, lon=lon, radius_m=radius_m, limit=limit, after=after, now=clock.now())
    params = next(walks)
    while True:
        try:
            params = walks.send(await proximity.walk_async(conn, _NEARBY_DRIVER_SQL, params))
        except StopIteration as done:
            return done.value


def _to_nearby(
    row: Row, now: datetime, open_states: dict[tuple[str | None, str], tuple[bool, datetime | None]]
) -> NearbyStore:
    # The hours come as text: decoded and parsed once per process (stores share a few weeks).
    week = hours.stored_week(row.opening_hours)
    key = (row.opening_hours, row.timezone)
    if key not in open_states:
        open_states[key] = hours.stored_open_state(week, row.timezone, now)
    is_open, opens_at = open_states[key]
    return NearbyStore(
        store_id=row.store_id,
        name=row.name,
        address=row.address,
        location={"lat": row.lat, "lon": row.lon},
        timezone=row.timezone,
        opening_hours=week.entries,
        offers_pickup=row.offers_pickup,
        offers_delivery=row.offers_delivery,
        prep_minutes=row.prep_minutes,
        delivery_fee_minor=row.delivery_fee_minor,
        currency=row.currency,
        is_open=is_open,
        opens_at=opens_at,
        distance_m=row.distance_m,
    )
