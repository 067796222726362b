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
(a sphere distance d means a spheroid distance above d x (1 - SPHEROID_BOUND)).

Complete stores are found first; only when fewer than the limit exist is a second query made for
the nearest partial ones, with its own plan.

Round trips. A search is one statement, two when partial stores are needed: the planning
statistics are cached per process (see STATS_TTL_S) and the cart is checked inside the first
query. Each plan has statement text of its own with array parameters, so the driver prepares it
after a few runs (psycopg's prepare_threshold) and later searches skip parsing it. PostgreSQL
still plans most of them afresh (plan_cache_mode auto keeps custom plans, whose estimates for
the cart are sharper); their generic plans have the same shapes, so reusing one is safe.
The clusters run with jit = off (scripts/platform.sh, docker-compose.yml): PostGIS's high
function costs would trigger a compilation that takes longer than these queries run.
"""

import base64
import binascii
import functools
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Row, TextClause, select, text
from sqlalchemy.orm import Session

from o2o.config import get_settings
from o2o.errors import InvalidInput
from stores import hours
from stores.eta import delivery_eta_minutes, pickup_eta_minutes
from stores.models import Product

Fulfillment = Literal["pickup", "delivery", "any"]
FULFILLMENTS: tuple[str, ...] = ("pickup", "delivery", "any")

MAX_LINES = 50
MAX_QUANTITY = 1000
MAX_LIMIT = 100

# On WGS84 a geodesic is between 0.56% shorter and 0.45% longer than the great circle on the
# mean sphere that `<->` measures (meridian and prime-vertical radii of curvature against the
# mean radius); 0.6% bounds both with room for rounding.
SPHEROID_BOUND = 0.006
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


@dataclass(frozen=True)
class CartLine:
    product_id: int
    quantity: int


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


# ---------------------------------------------------------------------------------------------
# The cart


def merge_lines(lines: Iterable[Any]) -> list[CartLine]:
    """Add up lines of the same product, keeping the order each product first appeared in."""
    merged: dict[int, int] = {}
    for line in lines:
        merged[line.product_id] = merged.get(line.product_id, 0) + line.quantity
    return [CartLine(product_id, quantity) for product_id, quantity in merged.items()]


def _check_lines(lines: Sequence[Any]) -> list[CartLine]:
    """Check line count and quantities; return the lines merged by product."""
    if not lines:
        raise InvalidInput("The cart is empty.", code="empty_cart")
    if len(lines) > MAX_LINES:
        raise InvalidInput(
            f"A cart has at most {MAX_LINES} lines.",
            code="too_many_lines",
            details={"max_lines": MAX_LINES, "lines": len(lines)},
        )
    for line in lines:
        if isinstance(line.quantity, bool) or not isinstance(line.quantity, int):
            raise InvalidInput("Quantities are whole numbers.", code="invalid_quantity")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidInput(
                f"Each quantity must be from 1 to {MAX_QUANTITY}.",
                code="invalid_quantity",
                details={"product_id": line.product_id, "quantity": line.quantity},
            )
    merged = merge_lines(lines)
    for line in merged:
        if line.quantity > MAX_QUANTITY:
            raise InvalidInput(
                f"Each product's quantity must be at most {MAX_QUANTITY}.",
                code="invalid_quantity",
                details={"product_id": line.product_id, "quantity": line.quantity},
            )
    return merged


def _check_products(merged: Sequence[CartLine], products: Mapping[int, Any]) -> None:
    """Refuse unknown and controlled products and quantities above a product's limit."""
    ids = [line.product_id for line in merged]
    unknown = [product_id for product_id in ids if product_id not in products]
    if unknown:
        raise InvalidInput(
            "Some products do not exist: " + ", ".join(map(str, unknown)) + ".",
            code="unknown_product",
            details={"product_ids": unknown},
        )
    controlled = [products[product_id] for product_id in ids if products[product_id].controlled]
    if controlled:
        names = ", ".join(p.name for p in controlled)
        raise InvalidInput(
            f"Controlled medicines are never sold online: {names}.",
            code="controlled_product",
            details={"product_ids": [p.id for p in controlled]},
        )
    over = [
        (products[line.product_id], line.quantity)
        for line in merged
        if products[line.product_id].max_per_order is not None
        and line.quantity > products[line.product_id].max_per_order
    ]
    if over:
        raise InvalidInput(
            " ".join(
                f"At most {p.max_per_order} of {p.name} per order (asked {quantity})."
                for p, quantity in over
            ),
            code="max_per_order_exceeded",
            details={
                "products": [
                    {
                        "product_id": p.id,
                        "name": p.name,
                        "max_per_order": p.max_per_order,
                        "quantity": quantity,
                    }
                    for p, quantity in over
                ]
            },
        )


def validate_cart(session: Session, lines: Sequence[Any]) -> dict[int, Product]:
    """Check a cart (merging lines of one product); return its products by id, or raise 422."""
    merged = _check_lines(lines)
    products = session.scalars(
        select(Product).where(Product.id.in_([line.product_id for line in merged]))
    )
    by_id = {product.id: product for product in products}
    _check_products(merged, by_id)
    return by_id


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


def _database(session: Session) -> str:
    return str(session.get_bind().engine.url)


def _cached_counts(session: Session, ids: Sequence[int]) -> tuple[dict[int, int], int] | None:
    """Return the stores holding each product and all stores, if all are cached and fresh."""
    cache = _stats.get(_database(session))
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


def _remember_counts(session: Session, counts: Mapping[int, int], store_total: int) -> None:
    cache = _stats.setdefault(_database(session), {})
    if len(cache) > _STATS_MAX_PRODUCTS:
        cache.clear()
    now = time.monotonic()
    cache.update({product_id: (n, now) for product_id, n in counts.items()})
    cache[0] = (store_total, now)  # product ids start at 1


def _load_cart(
    session: Session, lines: Sequence[Any], *, checked: list[CartLine] | None = None
) -> tuple[list[CartLine], dict[int, int], int]:
    """Check the cart; return its merged lines, the stores holding each product, all stores.

    `checked` is what `_check_lines(lines)` already returned, to spare checking them again."""
    merged = _check_lines(lines) if checked is None else checked
    ids = [line.product_id for line in merged]
    rows = session.execute(_CART_SQL, {"ids": ids}).all()
    _check_products(merged, {row.id: row for row in rows})
    store_total = max(int(rows[0].store_total), 1)
    counts = {row.id: row.store_count for row in rows if row.store_count is not None}
    unknown = [product_id for product_id in ids if product_id not in counts]
    if unknown:
        for product_id, n in session.execute(_COUNT_SQL, {"ids": unknown, "cap": STOCK_COUNT_CAP}):
            counts[product_id] = store_total if n >= STOCK_COUNT_CAP else n
    _remember_counts(session, counts, store_total)
    return merged, counts, store_total


# ---------------------------------------------------------------------------------------------
# SQL. Points are bound parameters: the index sees a constant and `location` is used exactly as
# indexed, never cast. Each query is a stream of stores nearest first, tested lazily: its LIMIT
# ends the stream once enough stores matched, so most stores are never probed.

_POINT = "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography"
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
    s.location <-> {_POINT} AS sphere_m"""


def _matches(kind: str, fulfillment: str) -> str:
    # Cheapest test first. A spheroid distance costs about 2 us against well under one for the
    # sphere's, so the exact radius test comes last, on the few stores that passed the rest;
    # the sphere cutoff before it rules out the rest of the world.
    return (
        f"s.sphere_m <= :cutoff_m AND {_HOLDS[kind]} AND {_SERVES[fulfillment][1]} "
        f"AND ST_Distance(s.location, {_POINT}) <= :radius_m"
    )


# Whether every product of the cart exists, none is controlled and no quantity is above its
# product's limit: the checks of _check_products, done inside a search's first query (an
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
               ST_Distance(s.location, {_POINT}) AS distance_m,
               ST_Distance(s.location, {_DELIVERY_POINT}::geography) AS delivery_distance_m,
               {_CAN_DELIVER} AS can_deliver,
               s.offers_pickup, s.offers_delivery, s.delivery_fee_minor, s.currency,
               s.prep_minutes, s.courier_speed_kmh, s.detour_factor, s.timezone, s.opening_hours
        FROM ({stream}) AS w
        JOIN stores AS s ON s.id = w.id
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
                ORDER BY s.location <-> {_POINT}
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


# ---------------------------------------------------------------------------------------------
# Choosing and running a plan


@dataclass(frozen=True)
class _Query:
    params: dict[str, Any]
    fulfillment: str
    lines: list[CartLine]  # rarest first
    store_counts: dict[int, int]
    store_total: int


def _sort_key(row: Row) -> tuple[float, int]:
    return (row.distance_m, row.store_id)


def _proven(best: list[Row], k: int, unseen_sphere_m: float) -> bool:
    """Whether no store beyond a sphere distance can beat the k-th best spheroid distance."""
    return len(best) >= k and best[k - 1].distance_m < unseen_sphere_m * (1 - SPHEROID_BOUND)


def _nearest_in_stream(
    session: Session, sql: str, params: dict[str, Any], k: int, budget: int | None = None
) -> list[Row] | None:
    """Return the k nearest matches of a stream of stores in sphere order, proven in spheroid
    order; None if the stream's budget of stores ran out first."""
    want = k + SPARE_MATCHES
    while True:
        rows = session.execute(_statement(sql, want, budget), params).all()
        rows.sort(key=lambda r: (r.rn, r.sphere_m))
        matches = sorted((r for r in rows if r.matched), key=_sort_key)
        if not rows or rows[-1].sphere_m > params["cutoff_m"]:
            return matches[:k]  # every store in the radius was seen
        spent = budget is not None and rows[-1].rn == budget
        if len(matches) < want and not spent:
            return matches[:k]  # every store there is was seen
        if _proven(matches, k, rows[-1].sphere_m):
            return matches[:k]
        if spent:
            return None
        want *= 2  # near-ties at the sphere/spheroid bound: look further


def _walk(session: Session, query: _Query, kind: str, k: int, budget: int) -> list[Row] | None:
    """Return the k nearest matching stores by an index walk, or None if its budget ran out."""
    return _nearest_in_stream(session, _walk_sql(kind, query.fulfillment), query.params, k, budget)


def _driven(session: Session, query: _Query, kind: str, k: int) -> list[Row]:
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
    return _nearest_in_stream(session, sql, params, k)


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


def _nearest(session: Session, query: _Query, kind: str, k: int) -> list[Row]:
    """Return the k nearest stores that hold the cart completely ("complete") or in part."""
    if k <= 0:
        return []
    if kind == "partial" and len(query.lines) == 1 and query.lines[0].quantity == 1:
        return []  # one unit of one product: a store has it or not
    budget = _walk_budget(query, kind, k)
    if budget is not None:
        found = _walk(session, query, kind, k, budget)
        if found is not None:
            return found
    return _driven(session, query, kind, k)


def _sphere_cutoff(radius_m: float) -> float:
    """Return the sphere distance beyond which no store can be within radius_m on the spheroid."""
    return radius_m / (1 - SPHEROID_BOUND)


# ---------------------------------------------------------------------------------------------
# Search


def _check_point(lat: float, lon: float, what: str) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidInput(
            f"The {what} must have lat in [-90, 90] and lon in [-180, 180].",
            code="invalid_location",
            details={"lat": lat, "lon": lon},
        )


def _radius(radius_m: float | None) -> float:
    max_radius = get_settings().search_max_radius_m
    if radius_m is None:
        return max_radius
    if not (math.isfinite(radius_m) and 0 < radius_m <= max_radius):
        raise InvalidInput(
            f"The search radius must be more than 0 and at most {max_radius:g} m.",
            code="invalid_radius",
            details={"radius_m": radius_m, "max_radius_m": max_radius},
        )
    return radius_m


@functools.lru_cache(maxsize=4096)
def _intervals(week: tuple[tuple[int, str, str], ...]) -> tuple[hours.OpeningInterval, ...]:
    return tuple(
        hours.parse_interval({"weekday": weekday, "opens": opens, "closes": closes})
        for weekday, opens, closes in week
    )


def _open_state(
    opening_hours: list[dict] | None, timezone: str, now: datetime
) -> tuple[bool, datetime | None]:
    """Return whether a store is open now and, if not, when it opens next."""
    # Stores share a few weeks of hours: parse each once, not on every search.
    week = (
        None
        if opening_hours is None
        else _intervals(tuple((e["weekday"], e["opens"], e["closes"]) for e in opening_hours))
    )
    if hours.is_open_at(week, timezone, now):
        return True, None
    return False, hours.next_opening(week, timezone, now)


def _to_match(
    row: Row, query: _Query, cart: list[CartLine], now: datetime, complete: bool
) -> StoreMatch:
    missing = []
    if not complete:
        # `available` follows the order the lines were bound in (rarest first).
        available = dict(zip(query.params["product_ids"], row.available, strict=True))
        missing = [
            {
                "product_id": line.product_id,
                "quantity_missing": line.quantity - available[line.product_id],
            }
            for line in cart
            if available[line.product_id] < line.quantity
        ]
    if row.can_deliver and query.fulfillment != "pickup":
        eta = delivery_eta_minutes(
            row.prep_minutes, row.delivery_distance_m, row.detour_factor, row.courier_speed_kmh
        )
    else:
        eta = pickup_eta_minutes(row.prep_minutes)
    is_open, opens_at = _open_state(row.opening_hours, row.timezone, now)
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
    )


def search_stores(
    session: Session,
    *,
    lat: float,
    lon: float,
    lines: Sequence[Any],
    fulfillment: Fulfillment = "any",
    limit: int = 5,
    radius_m: float | None = None,
    delivery_point: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> list[StoreMatch]:
    """Find the nearest stores holding the whole cart, then the nearest holding part of it.

    Complete stores come first, nearest first; when fewer than `limit` exist in the radius, the
    nearest partial stores follow with what they miss. `distance_m` is from (lat, lon);
    delivery (zone, ETA) is judged at `delivery_point` when given, else at (lat, lon).
    """
    _check_point(lat, lon, "location")
    if delivery_point is not None:
        _check_point(*delivery_point, "delivery address")
    if fulfillment not in FULFILLMENTS:
        raise InvalidInput(
            "fulfillment must be pickup, delivery or any.", code="invalid_fulfillment"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}.", code="invalid_limit")
    radius = _radius(radius_m)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    merged = _check_lines(lines)
    cached = _cached_counts(session, [line.product_id for line in merged])
    if cached is None:
        _, counts, store_total = _load_cart(session, lines, checked=merged)
    else:
        counts, store_total = cached
    rarest_first = sorted(merged, key=lambda line: (counts[line.product_id], line.product_id))
    delivery_lat, delivery_lon = delivery_point or (lat, lon)
    query = _Query(
        params={
            "lat": lat,
            "lon": lon,
            "delivery_lat": delivery_lat,
            "delivery_lon": delivery_lon,
            "radius_m": radius,
            "cutoff_m": _sphere_cutoff(radius),
            "now": now,
            # The earliest "today" of any timezone: a safe lower bound for expiry prefilters.
            "earliest": (now.astimezone(UTC) - timedelta(days=1)).date(),
            "product_ids": [line.product_id for line in rarest_first],
            "quantities": [line.quantity for line in rarest_first],
        },
        fulfillment=fulfillment,
        lines=rarest_first,
        store_counts=counts,
        store_total=store_total,
    )
    complete = _nearest(session, query, "complete", limit)
    if cached is not None and complete and not complete[0].cart_ok:
        _load_cart(session, lines, checked=merged)  # raises the cart's error
    partial = _nearest(session, query, "partial", limit - len(complete))
    if cached is not None and not complete and not (partial and partial[0].cart_ok):
        # Finding nothing says nothing of the cart: check it in full.
        _load_cart(session, lines, checked=merged)
    return [_to_match(row, query, merged, now, True) for row in complete] + [
        _to_match(row, query, merged, now, False) for row in partial
    ]


# ---------------------------------------------------------------------------------------------
# Stores near a point, paged


@dataclass
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
           ST_X(s.location::geometry) AS lon, s.timezone, s.opening_hours, s.offers_pickup,
           s.offers_delivery, s.prep_minutes, s.delivery_fee_minor, s.currency,
           ST_Distance(s.location, {_POINT}) AS distance_m, s.location <-> {_POINT} AS sphere_m
    FROM stores AS s
    WHERE s.is_active
    ORDER BY s.location <-> {_POINT}
    OFFSET 0
) AS s
WHERE s.sphere_m > :cutoff_m
   OR (s.distance_m <= :radius_m AND (s.distance_m, s.store_id) > (:after_distance, :after_id))
LIMIT :want
"""
)


def _query_key(lat: float, lon: float, radius_m: float) -> str:
    return hashlib.sha256(f"{lat!r},{lon!r},{radius_m!r}".encode()).hexdigest()[:12]


def _encode_cursor(distance_m: float, store_id: int, key: str) -> str:
    raw = json.dumps([distance_m, store_id, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, key: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        distance_m, store_id, cursor_key = json.loads(raw)
        valid = (
            isinstance(distance_m, int | float)
            and math.isfinite(distance_m)
            and isinstance(store_id, int)
            and not isinstance(store_id, bool)
        )
    except (binascii.Error, ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidInput("The cursor is not one this list gave out.", code="invalid_cursor")
    if cursor_key != key:
        # A cursor from another search would silently skip or repeat stores.
        raise InvalidInput(
            "The cursor belongs to a different location or radius.", code="invalid_cursor"
        )
    return float(distance_m), store_id


def nearby_stores(
    session: Session,
    *,
    lat: float,
    lon: float,
    radius_m: float | None,
    limit: int,
    after: str | None = None,
    now: datetime | None = None,
) -> tuple[list[NearbyStore], str | None]:
    """List active stores within radius_m, nearest first; return a page and the next cursor."""
    _check_point(lat, lon, "location")
    radius = _radius(radius_m)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}.", code="invalid_limit")
    now = now or datetime.now(UTC)
    key = _query_key(lat, lon, radius)
    # Keyset (distance_m, id): stable across pages even when stores are added in between.
    after_distance, after_id = _decode_cursor(after, key) if after else (-1.0, 0)
    params = {
        "lat": lat,
        "lon": lon,
        "radius_m": radius,
        "cutoff_m": _sphere_cutoff(radius),
        "after_distance": after_distance,
        "after_id": after_id,
    }
    # One more than the page tells whether another page follows.
    k = limit + 1
    want = 2 * k + 2
    while True:
        rows = session.execute(_NEARBY_SQL, {**params, "want": want}).all()
        best = sorted((r for r in rows if r.matched), key=_sort_key)
        last_sphere_m = max((r.sphere_m for r in rows), default=math.inf)
        if len(rows) < want or last_sphere_m > params["cutoff_m"]:
            break  # every store in the radius was seen
        if _proven(best, k, last_sphere_m):
            break
        want *= 2
    page = best[:limit]
    next_cursor = None
    if len(best) > limit:
        last = page[-1]
        next_cursor = _encode_cursor(last.distance_m, last.store_id, key)
    return [_to_nearby(row, now) for row in page], next_cursor


def _to_nearby(row: Row, now: datetime) -> NearbyStore:
    is_open, opens_at = _open_state(row.opening_hours, row.timezone, now)
    return NearbyStore(
        store_id=row.store_id,
        name=row.name,
        address=row.address,
        location={"lat": row.lat, "lon": row.lon},
        timezone=row.timezone,
        opening_hours=row.opening_hours,
        offers_pickup=row.offers_pickup,
        offers_delivery=row.offers_delivery,
        prep_minutes=row.prep_minutes,
        delivery_fee_minor=row.delivery_fee_minor,
        currency=row.currency,
        is_open=is_open,
        opens_at=opens_at,
        distance_m=row.distance_m,
    )
