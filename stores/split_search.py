"""A split plan for a cart no single store near the patient holds (`allow_split`).

One query reads the candidates: the SPLIT_CANDIDATES nearest active stores (in the GiST index's
sphere order) that serve the fulfillment asked for and hold any unit of the cart, those of them
within the radius, each with its usable stock
per line (as search counts it: on hand minus reserved over the lots that do not expire within the
store's minimum shelf life, in the store's own days). The pure planner (`stores.split_plan`)
then picks the fewest of them, nearest by total distance. Stores beyond the nearest
SPLIT_CANDIDATES holders are not considered: a plan that needs one is rare, and far.

The plan is one statement (`stores.statements`): a placement runs it on its session, the search
endpoint on its driver connection, as it runs the search itself.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from stores import cart, fleet_load, proximity, search, split_plan, statements
from stores.cart import CartLine
from stores.eta import delivery_eta_minutes, pickup_eta_minutes
from stores.proximity import POINT_SQL
from stores.statements import Step, Steps

# Enough holders to find a plan of three in a city's neighbourhood; the planner's work grows with
# the cube of this in the worst case (a few thousand sets after its pruning).
SPLIT_CANDIDATES = 40

# Plan: a walk of the GiST index nearest first (`location <-> point`, the sphere distance),
# testing each store's lots for the cart's products (ix_lots_product_store) as it goes, stopped by
# the inner LIMIT after SPLIT_CANDIDATES holders, written into the text: the search endpoint's
# connections use generic plans (`o2o.db.DRIVER_CONNECTION`), which cost a `LIMIT $1` as a
# tenth of the table and could then prefer sorting it to walking the index. No radius condition
# inside the walk: PostGIS estimates ST_DWithin at one row whatever the radius, and a walk that
# must find its holders would go on through the whole table when fewer are in the radius; the
# radius (spheroid, exact) is tested on the ones found, and they are ordered by spheroid
# distance.
_CANDIDATES_SQL = text(
    f"""
    SELECT s.id AS store_id, s.name, ST_Y(s.location::geometry) AS lat,
           ST_X(s.location::geometry) AS lon,
           ST_Distance(s.location, {POINT_SQL}) AS distance_m,
           ST_Distance(s.location, {search._DELIVERY_POINT}::geography) AS delivery_distance_m,
           {search._CAN_DELIVER} AS can_deliver,
           s.prep_minutes, s.courier_speed_kmh, s.detour_factor, fl.courier_wait_minutes,
           ARRAY(SELECT {search._AVAILABLE} FROM {search._CART} ORDER BY c.line) AS available
    FROM (
        SELECT s.id FROM stores AS s
        WHERE s.is_active AND {search._HOLDS_ANY}
          AND (CASE CAST(:fulfillment AS text)
                 WHEN 'pickup' THEN s.offers_pickup
                 WHEN 'delivery' THEN {search._CAN_DELIVER}
                 ELSE s.offers_pickup OR {search._CAN_DELIVER} END)
        ORDER BY s.location <-> {POINT_SQL}
        LIMIT {SPLIT_CANDIDATES}
    ) AS walk
    JOIN stores AS s ON s.id = walk.id
    -- The fleet's estimate of the wait for a courier, when it is fresh (as search reads it).
    LEFT JOIN store_fleet_load AS fl
      ON fl.store_id = s.id AND fl.computed_at >= :fleet_since
    WHERE ST_Distance(s.location, {POINT_SQL}) <= :radius_m
    ORDER BY distance_m, s.id
    """
)


@dataclass
class SplitPart:
    """One store of a split plan and what it fills."""

    store_id: int
    name: str
    location: dict[str, float]
    distance_m: float
    items: list[tuple[int, int]]  # (product_id, quantity)
    can_deliver: bool
    eta_minutes: int


@dataclass
class SplitPlan:
    parts: list[SplitPart]  # nearest first

    @property
    def store_count(self) -> int:
        return len(self.parts)


def plan_cart(session: Session, **where: Any) -> SplitPlan | None:
    """`plan_split` (the same arguments, after the session) run on a session."""
    return statements.run(session, plan_split(**where))


async def plan_cart_async(conn: AsyncConnection, **where: Any) -> SplitPlan | None:
    """`plan_split` run on the driver's async connection (the search endpoint)."""
    return await statements.run_async(conn, plan_split(**where))


def plan_split(
    *,
    lat: float,
    lon: float,
    lines: Sequence[CartLine],
    fulfillment: search.Fulfillment = "any",
    radius_m: float | None = None,
    delivery_point: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> Steps[SplitPlan | None]:
    """Return the fewest nearby stores (at most three) that together hold the cart, or None; as
    statements whoever runs them."""
    proximity.check_point(lat, lon, "location")
    if delivery_point is not None:
        proximity.check_point(*delivery_point, "delivery address")
    radius = proximity.search_radius(radius_m)
    now = now or clock.now()
    merged = cart.check_lines(lines)
    delivery_lat, delivery_lon = delivery_point or (lat, lon)
    # An index walk nearest first: run as every such walk is (stores.proximity.walk), so a pair of
    # points PostGIS' index misorders falls back to an exact scan instead of failing (or, in a
    # placement, which runs its walks without savepoints, redoes the placement with guarded ones).
    rows = yield Step(
        _CANDIDATES_SQL,
        {
            "lat": lat,
            "lon": lon,
            "delivery_lat": delivery_lat,
            "delivery_lon": delivery_lon,
            "radius_m": radius,
            "now": now,
            "product_ids": [line.product_id for line in merged],
            "quantities": [line.quantity for line in merged],
            "fulfillment": fulfillment,
            "fleet_since": fleet_load.fresh_since(now),
        },
        walk=True,
    )
    ids = [line.product_id for line in merged]
    candidates = [
        split_plan.Candidate(
            row.store_id, float(row.distance_m), dict(zip(ids, row.available, strict=True))
        )
        for row in rows
    ]
    plan = split_plan.plan_split(candidates, {line.product_id: line.quantity for line in merged})
    if plan is None:
        return None
    by_id = {row.store_id: row for row in rows}
    delivering = fulfillment != "pickup"
    parts = []
    for part in plan.parts:
        row = by_id[part.store_id]
        if row.can_deliver and delivering:
            eta = delivery_eta_minutes(
                row.prep_minutes, row.delivery_distance_m, row.detour_factor, row.courier_speed_kmh
            )
            if row.courier_wait_minutes is not None:
                eta += fleet_load.whole_minutes(row.courier_wait_minutes)
        else:
            eta = pickup_eta_minutes(row.prep_minutes)
        parts.append(
            SplitPart(
                store_id=row.store_id,
                name=row.name,
                location={"lat": row.lat, "lon": row.lon},
                distance_m=float(row.distance_m),
                items=list(part.items),
                can_deliver=bool(row.can_deliver),
                eta_minutes=eta,
            )
        )
    return SplitPlan(parts)
