"""Nearest stocked store: which stores near a point hold a whole cart, and which hold part of it.

Answers are exact. "Nearest" is the spheroid distance (`ST_Distance` on geography); "available"
is on hand minus reserved over the lots that do not expire within the store's minimum shelf
life, counted in the store's own days; a delivery zone holds an address as GeoJSON draws it.

Plans. The GiST index orders stores by `<->`, the distance on the sphere. Walking it and testing
each store's stock is fast while most stores hold the cart, but when few do it degrades into
probing the stock of every store in the radius. So each query picks its plan by selectivity, from
how many stores hold each product (`product_stock_stats`):

- walk: stores nearest first along the index, with a budget of stores to look at. A walk that
  spends its budget without an answer falls back to:
- driven: the stores whose lots hold the rarest lines (index `ix_lots_product_store`, an
  index-only range per product), fetched by id (`ix_stores_id_search`, index-only) and sorted by
  sphere distance, then tested nearest first.

Both are streams of stores in sphere order, tested lazily and cut off by a LIMIT once enough
match; the spheroid distance (the costly one) is computed only for matches. An answer is final
once proven: the k best spheroid distances seen are shorter than any store not yet seen can be
(a sphere distance d means a spheroid distance above d x (1 - SPHEROID_BOUND), see
`stores.proximity`).

Complete stores are found first; only when fewer than the limit exist is a second query made for
the nearest partial ones, with its own plan.

Round trips. A search is one statement, two when partial stores are needed: the planning
statistics are cached per process (see STATS_TTL_S), the cart is checked inside the first
query, and each result comes with its store's courier wait (`store_fleet_load`, when fresh). Each plan has statement text of its own with array parameters, so the driver prepares it
after a few runs (psycopg's prepare_threshold) and later searches skip parsing it. On a
session (checkout) PostgreSQL still plans most of them afresh (plan_cache_mode auto keeps custom
plans, whose estimates for the cart are sharper); their generic plans have the same shapes, so
the search endpoint's connections plan each once (`o2o.db.DRIVER_CONNECTION`).
The clusters run with jit = off (scripts/platform.sh, docker-compose.yml): PostGIS's high
function costs would trigger a compilation that takes longer than these queries run.
"""

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import InvalidInput
from o2o.i18n import gettext
from stores import cart, fleet_load, hours, proximity, statements
from stores.cart import CartLine
from stores.eta import delivery_eta_minutes, pickup_eta_minutes
from stores.proximity import POINT_SQL
from stores.statements import Step, Steps

Fulfillment = Literal["pickup", "delivery", "any"]
FULFILLMENTS: tuple[str, ...] = ("pickup", "delivery", "any")

# Matches a walk asks for beyond the k it needs: enough, nearly always, to prove the order.
SPARE_MATCHES = 2

# Looking at one store on an index walk (a GiST step with its heap fetch and sphere distance,
# and a stock probe of the rarest line) costs about as much as this many candidates of the
# driven plan (their lots in an index-only range, an index-only fetch by id, a sphere distance);
# measured on the benchmark city.
WALK_COST = 2.5
# A walk may look at this many times the stores it expects to need before falling back to the
# driven plan: enough that a fallback is rare (matches are binomial around the estimate).
WALK_BUDGET_FACTOR = 3
# A walk looks at no fewer stores than this before giving up, and at no more than this share of
# all stores: beyond it the planner would rather sort the whole table (and the driven plan is
# cheaper anyway).
MIN_WALK_BUDGET = 64
MAX_WALK_SHARE = 0.25
# The driven plan starts from the lines held by at most this many times the rarest's stores,
# at most MAX_DRIVERS of them: each costs one more index range and narrows the candidates.
DRIVER_SPREAD = 4
MAX_DRIVERS = 4
# Products missing from product_stock_stats are counted from the lots index up to this many
# stores; beyond it the product counts as held everywhere.
STOCK_COUNT_CAP = 512


@dataclass
class StoreMatch:
    """One store in a search answer."""

    store_id: int
    name: str
    location: dict[str, float]
    distance_m: float
    complete: bool
    missing: list[dict]
    can_deliver: bool
    eta_minutes: int
    is_open: bool
    opens_at: datetime | None
    offers_pickup: bool
    offers_delivery: bool
    delivery_fee_minor: int
    currency: str
    prep_minutes: int
    # The store's zone and shelf-life floor: the lots an order placed here may take
    # (`stores.service.min_sellable_expiry`) and the local time it opens.
    timezone: str
    min_shelf_life_days: int
    # Minutes a ready order waits for a courier around this store (in eta_minutes when
    # delivering; 0 when there is no fresh estimate of the fleet).
    courier_wait_minutes: int = 0
    # Equivalents this store gives for lines it lacks (stores.substitutes):
    # [{"for_product_id", "product_id", "quantity"}].
    substitutes: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Planning statistics

# A cart's products (to check them), how many stores hold each and how many stores there are
# (the planner's estimate is plenty for a selectivity; a table never analysed is counted).
_CART_SQL = text(
    """
    SELECT p.id, p.name, p.controlled, p.max_per_order, stats.store_count,
           (SELECT CASE WHEN reltuples > 0 THEN reltuples::bigint
                        ELSE (SELECT count(*) FROM stores) END
            FROM pg_class WHERE oid = 'stores'::regclass) AS store_total
    FROM products AS p
    LEFT JOIN product_stock_stats AS stats ON stats.product_id = p.id
    WHERE p.id = ANY(CAST(:ids AS integer[]))
    """
)

# Products not in product_stock_stats yet: count their stores from the lots index, stopping at
# a cap (a product held that widely is common for planning purposes).
_COUNT_SQL = text(
    """
    SELECT p.id, (SELECT count(*) FROM (SELECT DISTINCT l.store_id FROM lots AS l
                                        WHERE l.product_id = p.id LIMIT :cap) AS held) AS n
    FROM unnest(CAST(:ids AS integer[])) AS p(id)
    """
)

# The counts above are planning statistics (product_stock_stats itself is refreshed now and
# then), so each process keeps them for a while: a search whose products were all seen lately
# skips that round trip and checks its cart inside its first query instead (`cart_ok`).
# Staleness can only make a search slower, never change its answer.
STATS_TTL_S = 300.0
_STATS_MAX_PRODUCTS = 200_000
_stats: dict[str, dict[int, tuple[int, float]]] = {}


def _cached_counts(database: str, ids: Sequence[int]) -> tuple[dict[int, int], int] | None:
    """Return the stores holding each product and all stores, if all are cached and fresh."""
    cache = _stats.get(database)
    if not cache:
        return None
    now = time.monotonic()
    counts = {}
    for product_id in (*ids, 0):  # 0: the store total
        entry = cache.get(product_id)
        if entry is None or now - entry[1] > STATS_TTL_S:
            return None
        counts[product_id] = entry[0]
    return counts, counts.pop(0)


def _remember_counts(database: str, counts: Mapping[int, int], store_total: int) -> None:
    cache = _stats.setdefault(database, {})
    if len(cache) > _STATS_MAX_PRODUCTS:
        cache.clear()
    now = time.monotonic()
    cache.update({product_id: (n, now) for product_id, n in counts.items()})
    cache[0] = (store_total, now)  # product ids start at 1


def _cart_steps(
    database: str, lines: Sequence[Any], checked: list[CartLine] | None = None
) -> Steps[tuple[list[CartLine], dict[int, int], int]]:
    """Check the cart; return its merged lines, the stores holding each product, all stores.

    `checked` is what `cart.check_lines(lines)` already returned, to spare checking them again."""
    merged = cart.check_lines(lines) if checked is None else checked
    ids = [line.product_id for line in merged]
    rows = yield Step(_CART_SQL, {"ids": ids})
    cart.check_products(merged, {row.id: row for row in rows})
    store_total = max(int(rows[0].store_total), 1)
    counts = {row.id: row.store_count for row in rows if row.store_count is not None}
    unknown = [product_id for product_id in ids if product_id not in counts]
    if unknown:
        for product_id, n in (yield Step(_COUNT_SQL, {"ids": unknown, "cap": STOCK_COUNT_CAP})):
            counts[product_id] = store_total if n >= STOCK_COUNT_CAP else n
    _remember_counts(database, counts, store_total)
    return merged, counts, store_total


# ---------------------------------------------------------------------------------------------
# SQL. Points are bound parameters: the index sees a constant and `location` is used exactly as
# indexed, never cast. Each query is a stream of stores nearest first, tested lazily: its LIMIT
# ends the stream once enough stores matched, so most stores are never probed.

_DELIVERY_POINT = "ST_SetSRID(ST_MakePoint(:delivery_lon, :delivery_lat), 4326)"

_CART = (
    "unnest(CAST(:product_ids AS integer[]), CAST(:quantities AS integer[])) "
    "WITH ORDINALITY AS c(product_id, quantity, line)"
)

# The first expiry date store s may sell now: its own today plus its minimum shelf life.
_SELLABLE = "(CAST(:now AS timestamptz) AT TIME ZONE s.timezone)::date + s.min_shelf_life_days"

# Usable stock of cart line c at store s: an index-only probe of ix_lots_product_store
# (product_id, store_id) INCLUDE (expiry_date, on_hand, reserved).
_AVAILABLE = f"""(
    SELECT coalesce(sum(l.on_hand - l.reserved), 0) FROM lots AS l
    WHERE l.product_id = c.product_id AND l.store_id = s.id AND l.expiry_date >= {_SELLABLE}
)"""

# Lines are bound rarest first, so EXISTS stops at the first line that decides: a store without
# the rarest item costs one probe to be found short.
_SHORT = f"EXISTS (SELECT FROM {_CART} WHERE {_AVAILABLE} < c.quantity)"
# Holding any unit of the cart: one index scan over the cart's products at this store.
_HOLDS_ANY = f"""EXISTS (
    SELECT FROM lots AS l
    WHERE l.product_id = ANY(CAST(:product_ids AS integer[])) AND l.store_id = s.id
      AND l.expiry_date >= {_SELLABLE} AND l.on_hand > l.reserved
)"""
_HOLDS = {"complete": f"NOT {_SHORT}", "partial": f"{_HOLDS_ANY} AND {_SHORT}"}

# Zones are GeoJSON, whose edges are straight lines in lon/lat (RFC 7946, 3.1.1), so the test
# is planar: a great-circle edge would bow up to a metre away from the line the admin drew, and
# the planar test takes a microsecond where the geodetic one takes thirty. The cast is of a
# value already fetched, not of an indexed search condition.
_CAN_DELIVER = (
    "(s.offers_delivery AND s.delivery_zone IS NOT NULL "
    f"AND ST_Intersects(s.delivery_zone::geometry, {_DELIVERY_POINT}))"
)
# The same on a stream's narrow row: the zone is read only for stores that get this far.
_IN_ZONE = f"""EXISTS (
    SELECT FROM stores AS z
    WHERE z.id = s.id AND z.delivery_zone IS NOT NULL
      AND ST_Intersects(z.delivery_zone::geometry, {_DELIVERY_POINT})
)"""
# Per fulfillment: a column test cheap enough for the stream itself, and the rest of the test.
_SERVES = {
    "pickup": ("s.offers_pickup", "true"),
    "delivery": ("s.offers_delivery", _IN_ZONE),
    "any": ("true", f"(s.offers_pickup OR (s.offers_delivery AND {_IN_ZONE}))"),
}

# A stream's row: narrow, because a stream handles hundreds of stores and returns a handful.
_STREAM_COLUMNS = f"""
    s.id, s.location, s.offers_pickup, s.offers_delivery, s.timezone, s.min_shelf_life_days,
    s.location <-> {POINT_SQL} AS sphere_m"""


def _matches(kind: str, fulfillment: str) -> str:
    # Cheapest test first. A spheroid distance costs about 2 us against well under one for the
    # sphere's, so the exact radius test comes last, on the few stores that passed the rest;
    # the sphere cutoff before it rules out the rest of the world.
    return (
        f"s.sphere_m <= :cutoff_m AND {_HOLDS[kind]} AND {_SERVES[fulfillment][1]} "
        f"AND ST_Distance(s.location, {POINT_SQL}) <= :radius_m"
    )


# Whether every product of the cart exists, none is controlled and no quantity is above its
# product's limit: the checks of `cart.check_products`, done inside a search's first query (an
# InitPlan, run once) when its statistics came from the cache. Only a cart that fails it, or a
# search that finds no store, pays for the full check and its detailed error.
_CART_OK = f"""(
    SELECT count(*) = cardinality(CAST(:product_ids AS integer[]))
           AND bool_and(NOT p.controlled
                        AND (p.max_per_order IS NULL OR c.quantity <= p.max_per_order))
    FROM {_CART} JOIN products AS p ON p.id = c.product_id
)"""


def _with_output(stream: str, kind: str) -> str:
    """Wrap a stream (rows id, rn, sphere_m, matched) with what a result needs, read by primary
    key for the handful of rows it returns."""
    available = ", w.available" if kind == "partial" else ""
    return f"""
        SELECT w.rn, w.sphere_m, w.matched{available}, {_CART_OK} AS cart_ok,
               s.id AS store_id, s.name, ST_Y(s.location::geometry) AS lat,
               ST_X(s.location::geometry) AS lon,
               ST_Distance(s.location, {POINT_SQL}) AS distance_m,
               ST_Distance(s.location, {_DELIVERY_POINT}::geography) AS delivery_distance_m,
               {_CAN_DELIVER} AS can_deliver,
               s.offers_pickup, s.offers_delivery, s.delivery_fee_minor, s.currency,
               s.prep_minutes, s.courier_speed_kmh, s.detour_factor, s.timezone,
               s.min_shelf_life_days, s.opening_hours::text AS opening_hours,
               fl.courier_wait_minutes
        FROM ({stream}) AS w
        JOIN stores AS s ON s.id = w.id
        LEFT JOIN store_fleet_load AS fl
          ON fl.store_id = s.id AND fl.computed_at >= :fleet_since
        """


@functools.lru_cache(maxsize=256)
def _statement(template: str, want: int, budget: int | None) -> TextClause:
    """Return a stream's statement with its LIMITs written into the text.

    The LIMITs take few values (the budgets are powers of two, and `want` is the result limit
    plus SPARE_MATCHES, doubled on the rare retry), so the texts stay few and prepared; as
    constants they keep a generic plan's cost honest (`LIMIT $1` is costed as a tenth of the
    rows), which lets PostgreSQL reuse one where its estimates match the custom plans'.
    """
    sql = template.replace(":want", str(want))
    if budget is not None:
        sql = sql.replace(":budget", str(budget))
    return text(sql)


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _available_list(kind: str) -> str:
    if kind != "partial":
        return ""
    return f", ARRAY(SELECT {_AVAILABLE} FROM {_CART} ORDER BY c.line) AS available"


@functools.cache
def _walk_sql(kind: str, fulfillment: str) -> str:
    cheap = _SERVES[fulfillment][0]
    # Plan: Limit <- Nested Loop <- WindowAgg <- Limit(:budget) <- Index Scan idx_stores_location
    # ordered by `location <-> point`. The walk has no radius condition on purpose: PostGIS
    # estimates ST_DWithin at one row whatever the radius, which can tip the planner into sorting
    # the whole table. Stores beyond :cutoff_m (sphere) come back as markers instead and end the
    # walk through the outer LIMIT, as do :want matches; :budget caps the stores looked at, and
    # row_number() (streamed, no sort) tells the caller where the walk stopped.
    return _with_output(
        f"""
        SELECT s.id, s.rn, s.sphere_m, m.matched{_available_list(kind)}
        FROM (
            SELECT walk.*, row_number() OVER () AS rn
            FROM (
                SELECT {_STREAM_COLUMNS}
                FROM stores AS s
                WHERE s.is_active AND {cheap}
                ORDER BY s.location <-> {POINT_SQL}
                LIMIT :budget
            ) AS walk
        ) AS s
        -- OFFSET 0 keeps the test a node of its own, run once per store.
        CROSS JOIN LATERAL (SELECT {_matches(kind, fulfillment)} AS matched OFFSET 0) AS m
        WHERE m.matched OR s.rn = :budget OR s.sphere_m > :cutoff_m
        LIMIT :want
        """,
        kind,
    )


@functools.cache
def _driven_sql(kind: str, fulfillment: str, drivers: int) -> str:
    cheap = _SERVES[fulfillment][0]
    if fulfillment == "delivery":
        # Only stores whose zone's planar box holds the address (the box of the vertices holds
        # the zone as _CAN_DELIVER reads it): few at the edge of the city, where a walk finds no
        # zone around and falls back to this. Not in the walk: its budget must count the stores
        # it looks at, not the ones that pass.
        cheap += f" AND s.delivery_zone::geometry && {_DELIVERY_POINT}"
    if kind == "complete":
        # Stores whose lots could cover every driving line: one index-only range of
        # ix_lots_product_store per driving product, summed per store in one HashAggregate.
        # Expiry is checked against the earliest "today" of any timezone; the exact test follows.
        enough = " AND ".join(
            f"sum(l.on_hand - l.reserved) FILTER (WHERE l.product_id = :driver_{i}) "
            f">= :driver_quantity_{i}"
            for i in range(drivers)
        )
        candidates = f"""
            SELECT l.store_id FROM lots AS l
            WHERE l.product_id = ANY(CAST(:driver_ids AS integer[]))
              AND l.expiry_date >= :earliest
            GROUP BY l.store_id
            HAVING {enough}"""
    else:
        candidates = """
            SELECT l.store_id FROM lots AS l
            WHERE l.product_id = ANY(CAST(:product_ids AS integer[]))
              AND l.expiry_date >= :earliest AND l.on_hand > l.reserved"""
    # Plan: the candidates, collected into an array, fetch their stores by primary key (an
    # index scan, never a hash join over the whole table) and are sorted by sphere distance (a
    # few hundred narrow rows at most); the tests then run on them nearest first and the LIMIT
    # ends them after :want matches. OFFSET 0 keeps the sort below the tests, so the tests run
    # only on the stores the LIMIT pulls.
    return _with_output(
        f"""
        SELECT s.id, 0 AS rn, s.sphere_m, true AS matched{_available_list(kind)}
        FROM (
            SELECT {_STREAM_COLUMNS}
            FROM stores AS s
            WHERE s.id = ANY(ARRAY({candidates})) AND s.is_active AND {cheap}
            ORDER BY sphere_m, s.id
            OFFSET 0
        ) AS s
        WHERE {_matches(kind, fulfillment)}
        ORDER BY s.sphere_m, s.id
        LIMIT :want
        """,
        kind,
    )


# Holders read at a time (`plan_holders`): enough for a page of results in one statement almost
# always, and a bound on the stores whose answers one statement writes in a city where many hold
# the products.
HOLDERS_BATCH = 32


@functools.cache
def _holders_sql(fulfillment: str, batch: int) -> TextClause:
    """The stores in the radius that hold any unit of :product_ids and serve the fulfillment,
    nearest first on the sphere after (:after_sphere_m, :after_id), at most `batch`, each
    with its usable stock of every product (`available`, in :product_ids order), written as the
    other streams' results are: for `plan_holders`."""
    cheap = _SERVES[fulfillment][0]
    # Plan as the driven stream's: the stores whose lots hold any of the products, fetched by
    # id and sorted by sphere distance (narrow rows), then tested nearest first until the LIMIT;
    # only the rows returned are written out in full.
    return text(
        _with_output(
            f"""
            SELECT s.id, 0 AS rn, s.sphere_m, true AS matched{_available_list("partial")}
            FROM (
                SELECT {_STREAM_COLUMNS}
                FROM stores AS s
                WHERE s.id = ANY(ARRAY(
                        SELECT l.store_id FROM lots AS l
                        WHERE l.product_id = ANY(CAST(:product_ids AS integer[]))
                          AND l.expiry_date >= :earliest AND l.on_hand > l.reserved))
                  AND s.is_active AND {cheap}
                  -- Only those in the radius are sorted, not every holder in the city.
                  AND s.location <-> {POINT_SQL} <= :cutoff_m
                ORDER BY sphere_m, s.id
                OFFSET 0
            ) AS s
            WHERE (s.sphere_m, s.id) > (:after_sphere_m, :after_id)
              AND s.sphere_m <= :cutoff_m AND {_HOLDS_ANY} AND {_SERVES[fulfillment][1]}
              AND ST_Distance(s.location, {POINT_SQL}) <= :radius_m
            ORDER BY s.sphere_m, s.id
            LIMIT {batch}
            """,
            "partial",
        )
    )


# ---------------------------------------------------------------------------------------------
# Choosing and running a plan


@dataclass(frozen=True)
class _Query:
    params: dict[str, Any]
    fulfillment: str
    lines: list[CartLine]  # rarest first
    store_counts: dict[int, int]
    store_total: int


def _nearest_in_stream(
    sql: str, params: dict[str, Any], k: int, budget: int | None = None
) -> Steps[list[Any] | None]:
    """Return the k nearest matches of a stream of stores in sphere order, proven in spheroid
    order; None if the stream's budget of stores ran out first."""
    want = k + SPARE_MATCHES
    while True:
        rows = sorted(
            (yield Step(_statement(sql, want, budget), params, walk=True)),
            key=lambda r: (r.rn, r.sphere_m),
        )
        matches = sorted((r for r in rows if r.matched), key=proximity.sort_key)
        if not rows or rows[-1].sphere_m > params["cutoff_m"]:
            return matches[:k]  # every store in the radius was seen
        spent = budget is not None and rows[-1].rn == budget
        if len(matches) < want and not spent:
            return matches[:k]  # every store there is was seen
        if proximity.proven(matches, k, rows[-1].sphere_m):
            return matches[:k]
        if spent:
            return None
        want *= 2  # near-ties at the sphere/spheroid bound: look further


def _walk(query: _Query, kind: str, k: int, budget: int) -> Steps[list[Any] | None]:
    """Return the k nearest matching stores by an index walk, or None if its budget ran out."""
    return (
        yield from _nearest_in_stream(_walk_sql(kind, query.fulfillment), query.params, k, budget)
    )


def _driven(query: _Query, kind: str, k: int) -> Steps[list[Any]]:
    """Return the k nearest matching stores, starting from the stores that stock the cart."""
    rarest = max(query.store_counts[query.lines[0].product_id], 1)
    drivers = [
        line
        for line in query.lines[:MAX_DRIVERS]
        if query.store_counts[line.product_id] <= DRIVER_SPREAD * rarest
    ]
    params = {**query.params, "driver_ids": [line.product_id for line in drivers]}
    for i, line in enumerate(drivers):
        params[f"driver_{i}"] = line.product_id
        params[f"driver_quantity_{i}"] = line.quantity
    sql = _driven_sql(kind, query.fulfillment, len(drivers) if kind == "complete" else 0)
    return (yield from _nearest_in_stream(sql, params, k))


def _estimate(query: _Query, kind: str, k: int) -> tuple[float, int]:
    """Return (stores an index walk would look at, candidates the driven plan would sort)."""
    shares = [
        min(1.0, max(query.store_counts[line.product_id], 0.5) / query.store_total)
        for line in query.lines
    ]
    if kind == "complete":
        selectivity = math.prod(shares)
        candidates = min(query.store_counts[line.product_id] for line in query.lines)
    else:
        # Holding any line bounds holding part of the cart from above.
        selectivity = 1 - math.prod(1 - share for share in shares)
        candidates = sum(query.store_counts[line.product_id] for line in query.lines)
    return (k + SPARE_MATCHES) / max(selectivity, 1e-9), candidates


def _walk_budget(query: _Query, kind: str, k: int) -> int | None:
    """Return how many stores an index walk may look at, or None to start with the driven plan."""
    walk_length, candidates = _estimate(query, kind, k)
    if walk_length * WALK_COST > candidates:
        return None
    most = max(MIN_WALK_BUDGET, int(MAX_WALK_SHARE * query.store_total))
    budget = max(MIN_WALK_BUDGET, math.ceil(WALK_BUDGET_FACTOR * walk_length))
    # Powers of two: the budget is written into the statement's text (see _statement).
    return min(_power_of_two(budget), 1 << (most.bit_length() - 1))


def _nearest(query: _Query, kind: str, k: int) -> Steps[list[Any]]:
    """Return the k nearest stores that hold the cart completely ("complete") or in part."""
    if k <= 0:
        return []
    if kind == "partial" and len(query.lines) == 1 and query.lines[0].quantity == 1:
        return []  # one unit of one product: a store has it or not
    budget = _walk_budget(query, kind, k)
    if budget is not None:
        found = yield from _walk(query, kind, k, budget)
        if found is not None:
            return found
    return (yield from _driven(query, kind, k))


# ---------------------------------------------------------------------------------------------
# Search


def _params(
    lat: float,
    lon: float,
    radius: float,
    delivery_point: tuple[float, float] | None,
    now: datetime,
    lines: Sequence[CartLine],
) -> dict[str, Any]:
    """What every result statement binds: the point, the radius, the time and the cart's lines
    (in the order given: `available` and `cart_ok` follow it)."""
    delivery_lat, delivery_lon = delivery_point or (lat, lon)
    return {
        "lat": lat,
        "lon": lon,
        "delivery_lat": delivery_lat,
        "delivery_lon": delivery_lon,
        "radius_m": radius,
        "cutoff_m": proximity.sphere_cutoff(radius),
        "now": now,
        # The earliest "today" of any timezone: a safe lower bound for expiry prefilters.
        "earliest": (now.astimezone(UTC) - timedelta(days=1)).date(),
        "product_ids": [line.product_id for line in lines],
        "quantities": [line.quantity for line in lines],
        # The fleet's estimate is read with each result, when it is fresh.
        "fleet_since": fleet_load.fresh_since(now),
    }


def _to_match(
    row: Any,
    fulfillment: str,
    bound_ids: Sequence[int],
    merged: list[CartLine],
    now: datetime,
    complete: bool,
) -> StoreMatch:
    """A result from a statement's row; `bound_ids`: the products in the order the statement
    bound them (`product_ids`)."""
    missing = []
    if not complete:
        # `available` follows the order the lines were bound in (rarest first).
        available = dict(zip(bound_ids, row.available, strict=True))
        missing = [
            {
                "product_id": line.product_id,
                "quantity_missing": line.quantity - available[line.product_id],
            }
            for line in merged
            if available[line.product_id] < line.quantity
        ]
    courier_wait = 0
    if row.can_deliver and fulfillment != "pickup":
        eta = delivery_eta_minutes(
            row.prep_minutes, row.delivery_distance_m, row.detour_factor, row.courier_speed_kmh
        )
        # The promise knows the fleet: a delivery waits for a courier before it rides.
        if row.courier_wait_minutes is not None:
            courier_wait = fleet_load.whole_minutes(row.courier_wait_minutes)
            eta += courier_wait
    else:
        eta = pickup_eta_minutes(row.prep_minutes)
    is_open, opens_at = hours.stored_open_state(
        hours.stored_week(row.opening_hours), row.timezone, now
    )
    return StoreMatch(
        store_id=row.store_id,
        name=row.name,
        location={"lat": row.lat, "lon": row.lon},
        distance_m=row.distance_m,
        complete=complete,
        missing=missing,
        can_deliver=bool(row.can_deliver),
        eta_minutes=eta,
        is_open=is_open,
        opens_at=opens_at,
        offers_pickup=row.offers_pickup,
        offers_delivery=row.offers_delivery,
        delivery_fee_minor=row.delivery_fee_minor,
        currency=row.currency,
        prep_minutes=row.prep_minutes,
        timezone=row.timezone,
        min_shelf_life_days=row.min_shelf_life_days,
        courier_wait_minutes=courier_wait,
    )


def plan_search(
    database: str, *, partial_beside_complete: bool = True, **where: Any
) -> Steps[list[StoreMatch]]:
    """Find the nearest stores holding the whole cart, then the nearest holding part of it, as
    statements whoever runs them (`search_stores` runs them on a session); `database` names the
    database for the per-process statistics (`statements.database`).

    Complete stores come first, nearest first; when fewer than `limit` exist in the radius, the
    nearest partial stores follow with what they miss (with `partial_beside_complete` False, only
    when no store is complete: a placement routes among complete stores, and reads what the
    nearest partial ones miss only to say why no store has the cart). `distance_m` is from (lat,
    lon); delivery (zone, ETA) is judged at `delivery_point` when given, else at (lat, lon). A
    delivering store's ETA includes the wait for a courier the fleet around it implies.

    `where` are `plan_complete`'s (lat, lon, lines, fulfillment, limit, radius_m,
    delivery_point, now). The two halves are `plan_complete` and `plan_partial`, for a caller
    that may not need the second (`stores.substitutes`: stores completed by equivalents can fill
    the page first).
    """
    found = yield from plan_complete(database, **where)
    partial = yield from plan_partial(found, beside_complete=partial_beside_complete)
    return found.matches + partial


@dataclass(frozen=True)
class Complete:
    """The first half of a search: the nearest stores holding the whole cart, and what the
    second half (the nearest holding part of it, `plan_partial`) reads from."""

    matches: list[StoreMatch]
    limit: int
    query: _Query
    merged: list[CartLine]
    database: str
    now: datetime
    # The cart's statistics came from this process's cache, so the cart was not checked in full.
    cached: bool

    @property
    def cart_checked(self) -> bool:
        """Whether the cart is known to be one that may be searched for: checked in full, or
        held whole by a store (its statement checks the cart too)."""
        return not self.cached or bool(self.matches)


def plan_complete(
    database: str,
    *,
    lat: float,
    lon: float,
    lines: Sequence[Any],
    fulfillment: Fulfillment = "any",
    limit: int = 5,
    radius_m: float | None = None,
    delivery_point: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> Steps[Complete]:
    """The first half of `plan_search`: the nearest `limit` stores holding the whole cart (an
    invalid cart is refused here when a check in full is due)."""
    proximity.check_point(lat, lon, "location")
    if delivery_point is not None:
        proximity.check_point(*delivery_point, "delivery address")
    if fulfillment not in FULFILLMENTS:
        raise InvalidInput(
            gettext("fulfillment must be pickup, delivery or any."), code="invalid_fulfillment"
        )
    proximity.check_limit(limit)
    radius = proximity.search_radius(radius_m)
    now = now or clock.now()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    merged = cart.check_lines(lines)
    cached = _cached_counts(database, [line.product_id for line in merged])
    if cached is None:
        _, counts, store_total = yield from _cart_steps(database, lines, merged)
    else:
        counts, store_total = cached
    rarest_first = sorted(merged, key=lambda line: (counts[line.product_id], line.product_id))
    query = _Query(
        params=_params(lat, lon, radius, delivery_point, now, rarest_first),
        fulfillment=fulfillment,
        lines=rarest_first,
        store_counts=counts,
        store_total=store_total,
    )
    complete = yield from _nearest(query, "complete", limit)
    if cached is not None and complete and not complete[0].cart_ok:
        yield from _cart_steps(database, lines, merged)  # raises the cart's error
    bound = query.params["product_ids"]
    return Complete(
        matches=[_to_match(row, fulfillment, bound, merged, now, True) for row in complete],
        limit=limit,
        query=query,
        merged=merged,
        database=database,
        now=now,
        cached=cached is not None,
    )


def plan_partial(found: Complete, *, beside_complete: bool = True) -> Steps[list[StoreMatch]]:
    """The second half of `plan_search`: after the complete stores `found`, the nearest stores
    holding part of the cart, up to its limit (with `beside_complete` False, only when no store
    is complete)."""
    query = found.query
    partial = (
        (yield from _nearest(query, "partial", found.limit - len(found.matches)))
        if beside_complete or not found.matches
        else []
    )
    if found.cached and not found.matches and not (partial and partial[0].cart_ok):
        # Finding nothing says nothing of the cart: check it in full.
        # The merged lines are the cart, checked already.
        yield from _cart_steps(found.database, found.merged, found.merged)
    bound = query.params["product_ids"]
    return [
        _to_match(row, query.fulfillment, bound, found.merged, found.now, False) for row in partial
    ]


@dataclass(frozen=True)
class Holder:
    """A store holding some of a set of products, answered as a complete result would be."""

    match: StoreMatch
    available: dict[int, int]  # usable units of each product asked about
    sphere_m: float  # its distance on the sphere, the order holders are read in


def plan_holders(
    *,
    lat: float,
    lon: float,
    product_ids: Sequence[int],
    fulfillment: Fulfillment = "any",
    radius_m: float | None = None,
    delivery_point: tuple[float, float] | None = None,
    now: datetime,
    after: Holder | None = None,
) -> Steps[list[Holder]]:
    """Return the next HOLDERS_BATCH stores (after `after`, in sphere order) within the radius
    that hold any unit of `product_ids` and serve the fulfillment, each with its usable stock of
    every product and its answer as a complete match (distance from (lat, lon); zone, ETA and
    courier wait at `delivery_point`, else at (lat, lon)): one statement, for a caller that
    decides itself which stores the stock completes (`stores.substitutes`, through equivalents).
    Fewer than HOLDERS_BATCH: there are no more."""
    ids = list(product_ids)
    # One unit each: the cart check every result statement carries (`cart_ok`, unread here,
    # computed once per statement) reads quantities too.
    params = _params(
        lat,
        lon,
        proximity.search_radius(radius_m),
        delivery_point,
        now,
        [CartLine(product_id, 1) for product_id in ids],
    )
    params["after_sphere_m"] = after.sphere_m if after else -1.0
    params["after_id"] = after.match.store_id if after else 0
    rows = yield Step(_holders_sql(fulfillment, HOLDERS_BATCH), params)
    # In the stream's order (the statement's join around it does not promise to keep it).
    return [
        Holder(
            _to_match(row, fulfillment, ids, [], now, True),
            {product_id: int(n) for product_id, n in zip(ids, row.available, strict=True)},
            row.sphere_m,
        )
        for row in sorted(rows, key=lambda r: (r.sphere_m, r.store_id))
    ]


def search_stores(session: Session, **where: Any) -> list[StoreMatch]:
    """`plan_search` (the same arguments, after the session) run on a session."""
    return statements.run(session, plan_search(statements.database(session), **where))
