"""Search benchmark: a generated city, then p50/p99 of the nearest-stocked-store search.

Run with `bash scripts/bench.sh search` (its own database, `o2o_bench`). The city (10,000
stores, 5,000 products, about 10 million lots) is generated once in set-based SQL and reused
while its parameters are unchanged; `--regenerate` forces a new one.
"""

import argparse
import functools
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import UniqueConstraint, create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.schema import AddConstraint, CreateIndex

from o2o.config import get_settings
from stores import inventory, search, split_search
from stores.cart import CartLine
from stores.models import Lot

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
KM_PER_DEG_LAT = 110.574


@dataclass(frozen=True)
class City:
    """What the generated city looks like; a change to any field regenerates it."""

    stores: int = 10_000
    products: int = 5_000
    # Stocking share per product class (average over the catalogue ~20%): staples every store
    # carries, a long tail of regular products, and rare ones only ~5% of stores hold.
    staples: int = 500
    staple_share: float = 0.9
    rare: int = 250
    rare_share: float = 0.05
    regular_share: float = 0.125
    # Lots that cannot be sold: inside the shelf life (expire within 30 days), or all reserved.
    expiring_share: float = 0.05
    reserved_share: float = 0.03
    delivery_share: float = 0.6
    center_lat: float = 31.2304
    center_lon: float = 121.4737
    half_side_km: float = 25.0
    core_sigma_km: float = 7.0
    core_share: float = 0.6
    seed: float = 0.42
    layout: int = 2  # bump when the generator's SQL changes

    @property
    def rare_ids(self) -> range:
        return range(self.products - self.rare + 1, self.products + 1)

    @property
    def staple_ids(self) -> range:
        return range(1, self.staples + 1)


# ---------------------------------------------------------------------------------------------
# Generation


def _ensure_meta_table(conn: Connection) -> None:
    # Outside the migrations on purpose: it exists only in the benchmark database.
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS bench_search_city ("
            " id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), params jsonb NOT NULL,"
            " generated_at timestamptz NOT NULL, generation_s float NOT NULL, lots bigint NOT NULL)"
        )
    )


def _meta(conn: Connection) -> dict | None:
    """Return the generated city's parameters and generation time, if it is still intact."""
    _ensure_meta_table(conn)
    row = conn.execute(text("SELECT params, generation_s, lots FROM bench_search_city")).first()
    if row is None:
        return None
    # Other benchmarks share the database (they add their own stores far away, and remove
    # them); the city is intact while its own stores and lots are all there.
    n = row.params.get("stores", 0)
    stores, lots = conn.execute(
        text(
            "SELECT (SELECT count(*) FROM stores WHERE id <= :n AND name LIKE 'Benchmark pharmacy %'),"
            " (SELECT count(*) FROM lots WHERE store_id <= :n)"
        ),
        {"n": n},
    ).one()
    if stores != n or lots != row.lots:
        return None
    return {"params": row.params, "generation_s": row.generation_s, "lots": row.lots}


def _lots_index_ddl(conn: Connection) -> list[tuple[str, str]]:
    """Return (drop, create) statements for the lots indexes a bulk load should not maintain.

    Taken from the model (which tests/test_migrations.py keeps equal to the migrations), so a
    load that failed half-way, indexes dropped, still ends with the right ones.
    """
    table = Lot.__table__
    dialect = conn.dialect
    ddl = [
        (f'DROP INDEX IF EXISTS "{index.name}"', str(CreateIndex(index).compile(dialect=dialect)))
        for index in table.indexes
    ]
    ddl += [
        (
            f'ALTER TABLE lots DROP CONSTRAINT IF EXISTS "{constraint.name}"',
            str(AddConstraint(constraint).compile(dialect=dialect)),
        )
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    return ddl


def generate(engine: Engine, city: City) -> float:
    """Build the city from scratch in set-based SQL; return the seconds it took."""
    started = time.perf_counter()
    chunks = 20
    columns = [
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        phases = {
            "reset": progress.add_task("empty the tables", total=1),
            "stores": progress.add_task("stores and delivery zones", total=1),
            "products": progress.add_task("products", total=1),
            "lots": progress.add_task("lots (about 10 million)", total=chunks),
            "indexes": progress.add_task("lots indexes", total=1),
            "vacuum": progress.add_task("VACUUM ANALYZE", total=3),
            "stats": progress.add_task("product_stock_stats", total=1),
        }
        with engine.begin() as conn:
            _ensure_meta_table(conn)
            conn.execute(
                text(
                    "TRUNCATE lots, inventory_syncs, product_stock_stats, stores, products CASCADE"
                )
            )
            conn.execute(text("DELETE FROM bench_search_city"))
            progress.advance(phases["reset"])

            conn.execute(text("SELECT setseed(:seed)"), {"seed": city.seed})
            _insert_stores(conn, city)
            progress.advance(phases["stores"])
            _insert_products(conn, city)
            progress.advance(phases["products"])
            index_ddl = _lots_index_ddl(conn)
            for drop, _ in index_ddl:
                conn.execute(text(drop))

        # One statement per slice of stores: a progress step each, and a bounded transaction.
        bounds = [round(i * city.stores / chunks) for i in range(chunks + 1)]
        for i in range(chunks):
            with engine.begin() as conn:
                # The rows are consistent by construction: skip the per-row foreign key
                # triggers, which would double the load time.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                _insert_lots(conn, city, bounds[i] + 1, bounds[i + 1])
            progress.advance(phases["lots"])

        with engine.begin() as conn:
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            for _, create in index_ddl:
                conn.execute(text(create))
            progress.advance(phases["indexes"])

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("lots", "stores", "products"):
                conn.execute(text(f"VACUUM (ANALYZE) {table}"))
                progress.advance(phases["vacuum"])

        with Session(engine) as session:
            inventory.refresh_stock_stats(session)
            session.commit()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) product_stock_stats"))
        progress.advance(phases["stats"])

    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO bench_search_city (params, generated_at, generation_s, lots) "
                "VALUES (CAST(:params AS jsonb), now(), :s, (SELECT count(*) FROM lots))"
            ),
            {"params": json.dumps(asdict(city)), "s": elapsed},
        )
    return elapsed


def _insert_stores(conn: Connection, city: City) -> None:
    # A dense core (normal around the centre) inside a uniform square: where people and
    # pharmacies are. Box-Muller gives the normal offsets.
    conn.execute(
        text(
            """
            WITH g AS (
                SELECT n, random() < :core_share AS core,
                       random() AS u1, random() AS u2, random() AS u3, random() AS u4,
                       random() AS u5, random() AS u6
                FROM generate_series(1, CAST(:stores AS integer)) AS n
            ), xy AS (
                SELECT n, u5, u6,
                       CASE WHEN core
                            THEN least(greatest(:sigma * sqrt(-2 * ln(1 - u1)) * cos(2 * pi() * u2),
                                                -:half), :half)
                            ELSE (u3 * 2 - 1) * :half END AS x_km,
                       CASE WHEN core
                            THEN least(greatest(:sigma * sqrt(-2 * ln(1 - u1)) * sin(2 * pi() * u2),
                                                -:half), :half)
                            ELSE (u4 * 2 - 1) * :half END AS y_km
                FROM g
            ), placed AS (
                SELECT n, u5, u6,
                       ST_SetSRID(ST_MakePoint(
                           :lon + x_km / (111.320 * cos(radians(:lat))),
                           :lat + y_km / :km_per_deg_lat), 4326)::geography AS location
                FROM xy
            )
            INSERT INTO stores (id, name, address, location, timezone, opening_hours,
                                offers_pickup, offers_delivery, prep_minutes, delivery_fee_minor,
                                currency, delivery_zone, min_shelf_life_days,
                                courier_speed_kmh, detour_factor)
            SELECT n, 'Benchmark pharmacy ' || n, n || ' Example Road', location, 'Asia/Shanghai',
                   CASE WHEN n % 5 = 0 THEN NULL ELSE (
                       SELECT jsonb_agg(jsonb_build_object(
                           'weekday', d, 'opens', '08:00', 'closes', '22:00'))
                       FROM generate_series(0, 6) AS d) END,
                   true, u5 < :delivery_share, 5 + n % 20, 500, 'CNY',
                   CASE WHEN u5 < :delivery_share THEN ST_Multi(
                       ST_Buffer(location, 3000 + 3000 * u6, 'quad_segs=4')::geometry
                   )::geography END,
                   30, 18, 1.35
            FROM placed
            """
        ),
        {
            "stores": city.stores,
            "core_share": city.core_share,
            "sigma": city.core_sigma_km,
            "half": city.half_side_km,
            "lat": city.center_lat,
            "lon": city.center_lon,
            "km_per_deg_lat": KM_PER_DEG_LAT,
            "delivery_share": city.delivery_share,
        },
    )
    conn.execute(
        text("SELECT setval(pg_get_serial_sequence('stores', 'id'), :n)"), {"n": city.stores}
    )


def _insert_products(conn: Connection, city: City) -> None:
    conn.execute(
        text(
            """
            INSERT INTO products (id, name, generic_name, strength, dosage_form, pack_size, gtin,
                                  rx_only, controlled)
            SELECT n, 'Benchmark medicine ' || n, 'generic ' || n, (5 + n % 50 * 10) || ' mg',
                   (ARRAY['tablet', 'capsule', 'syrup', 'cream'])[n % 4 + 1], 10 + n % 30,
                   lpad(n::text, 14, '0'), n % 3 = 0, false
            FROM generate_series(1, CAST(:products AS integer)) AS n
            """
        ),
        {"products": city.products},
    )
    conn.execute(
        text("SELECT setval(pg_get_serial_sequence('products', 'id'), :n)"), {"n": city.products}
    )


def _insert_lots(conn: Connection, city: City, first_store: int, last_store: int) -> None:
    # One lot per stocked (store, product): the product's share decides whether a store holds
    # it; a few lots expire inside the 30-day shelf life or are fully reserved. Draws hash the
    # (store, product) pair with a salt per draw: the same city every time, whatever the plan
    # (random() in a WHERE clause would be pushed down to one side of the cross join).
    def draw(salt: int) -> str:
        return (
            f"((hashint8extended(s::bigint * 1000003 + p, {salt}) & 2147483647)::float8"
            " / 2147483648)"
        )

    conn.execute(
        text(
            f"""
            INSERT INTO lots (store_id, product_id, lot_number, expiry_date, on_hand, reserved,
                              price_minor, currency)
            SELECT s, p, 'B' || p || '-' || s,
                   CASE WHEN {draw(2)} < :expiring_share
                        THEN current_date + ({draw(3)} * 25)::int
                        ELSE current_date + 45 + ({draw(3)} * 700)::int END,
                   1 + ({draw(4)} * 40)::int,
                   CASE WHEN {draw(5)} < :reserved_share THEN 1 + ({draw(4)} * 40)::int ELSE 0 END,
                   100 + p % 4000, 'CNY'
            FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS s
            CROSS JOIN generate_series(1, CAST(:products AS integer)) AS p
            WHERE {draw(1)} < CASE WHEN p <= :staples THEN :staple_share
                                   WHEN p > :products - :rare THEN :rare_share
                                   ELSE :regular_share END
            """
        ),
        {
            "first": first_store,
            "last": last_store,
            "expiring_share": city.expiring_share,
            "reserved_share": city.reserved_share,
            "products": city.products,
            "staples": city.staples,
            "staple_share": city.staple_share,
            "rare": city.rare,
            "rare_share": city.rare_share,
            "regular_share": city.regular_share,
        },
    )


# ---------------------------------------------------------------------------------------------
# Measurement

KNN_PROBE = text(
    "SELECT id FROM stores "
    "ORDER BY location <-> ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography LIMIT 1"
)

# The plan the search avoids: test every store in the radius, then sort by distance.
NAIVE = text(
    """
    SELECT * FROM (
        SELECT s.id, d.distance_m, av.complete,
               row_number() OVER (PARTITION BY av.complete ORDER BY d.distance_m, s.id) AS rank
        FROM stores AS s
        CROSS JOIN LATERAL (
            SELECT ST_Distance(s.location,
                               ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography) AS distance_m
        ) AS d
        CROSS JOIN LATERAL (
            SELECT bool_and(a.available >= c.quantity) AS complete,
                   bool_or(a.available > 0) AS holds_any
            FROM unnest(CAST(:product_ids AS integer[]), CAST(:quantities AS integer[]))
                AS c(product_id, quantity)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(l.on_hand - l.reserved), 0) AS available FROM lots AS l
                WHERE l.product_id = c.product_id AND l.store_id = s.id
                  AND l.expiry_date >= (now() AT TIME ZONE s.timezone)::date
                                       + s.min_shelf_life_days
            ) AS a
        ) AS av
        WHERE s.is_active AND d.distance_m <= :radius_m AND av.holds_any
          AND (s.offers_pickup OR (s.offers_delivery AND ST_Intersects(
                s.delivery_zone::geometry, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))))
    ) AS ranked
    WHERE rank <= :limit
    """
)


@dataclass(frozen=True)
class Mix:
    name: str
    items: int
    pool: str  # "staple", "rare" or "mixed"
    fulfillment: str = "any"

    def cart(self, city: City, rng: random.Random) -> list[CartLine]:
        if self.pool == "mixed":
            rare = rng.choice(city.rare_ids)
            staples = rng.sample(city.staple_ids, self.items - 1)
            return [CartLine(rare, 1)] + [CartLine(p, 1) for p in staples]
        ids = city.staple_ids if self.pool == "staple" else city.rare_ids
        return [CartLine(p, 1) for p in rng.sample(ids, self.items)]


MIXES = [
    Mix("common", 1, "staple"),
    Mix("common", 3, "staple"),
    Mix("common", 5, "staple"),
    Mix("rare", 1, "rare"),
    Mix("rare", 3, "rare"),
    Mix("rare", 5, "rare"),
    Mix("rare + common", 3, "mixed"),
    Mix("common, delivery", 3, "staple", "delivery"),
    Mix("rare, delivery", 3, "rare", "delivery"),
]
# Carts timed a second time with allow_split (the search, then a split plan when no store in the
# radius holds the whole cart), next to the plain search of the same cart at the same point.
SPLIT_MIXES = [mix for mix in MIXES if mix.pool == "rare" and mix.fulfillment == "any"]
LIMIT = 5
DEFAULT_QUERIES = 300
DEFAULT_NAIVE_EVERY = 3


def query_points(city: City, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Points where patients are: drawn like the stores (dense core, uniform square)."""
    points = []
    for _ in range(n):
        if rng.random() < city.core_share:
            x, y = (
                max(-city.half_side_km, min(city.half_side_km, rng.gauss(0, city.core_sigma_km)))
                for _ in "xy"
            )
        else:
            x, y = (rng.uniform(-city.half_side_km, city.half_side_km) for _ in "xy")
        lat = city.center_lat + y / KM_PER_DEG_LAT
        lon = city.center_lon + x / (111.320 * math.cos(math.radians(city.center_lat)))
        points.append((lat, lon))
    return points


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    # Nearest rank: the smallest value with at least q% of the values at or below it.
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Timings:
    """Milliseconds per query: as the caller sees them, and as PostgreSQL spent them."""

    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    planning: list[float] = field(default_factory=list)  # the planning part of `server`
    statements: list[int] = field(default_factory=list)  # statements per call


def _server_ms(connection: Connection, statements: list[tuple[str, object]]) -> tuple[float, float]:
    """Return planning + execution time of statements, and planning time, as EXPLAIN ANALYZE
    reports them."""
    total = planning = 0.0
    for statement, parameters in statements:
        if statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK", "SET ")):
            continue  # the savepoint around an index walk (stores.proximity): nothing to plan
        plan = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY) " + statement, parameters
        )
        for (line,) in plan:
            if line.startswith(("Planning Time:", "Execution Time:")):
                total += float(line.split()[2])
            if line.startswith("Planning Time:"):
                planning += float(line.split()[2])
    return total, planning


def _run(
    engine: Engine,
    session: Session,
    replay: Connection,
    timings: Timings,
    run: Callable[..., object],
    *args,
    **kw,
) -> object:
    """Time one query as a request runs it (its own transaction, committed), then measure it
    server side by replaying its statements under EXPLAIN ANALYZE on another connection.

    Committed, not rolled back: psycopg forgets its prepared statements on a rollback, and a
    request's transaction commits."""
    # The statements are captured as the timed call sends them (a few microseconds each), so the
    # replay is of exactly those, the statistics lookup of a cache miss included.
    started = time.perf_counter()
    result, statements = _statements(engine, functools.partial(run, *args, **kw))
    session.commit()
    timings.client.append((time.perf_counter() - started) * 1000)
    server, planning = _server_ms(replay, statements)
    timings.server.append(server)
    timings.planning.append(planning)
    timings.statements.append(len(statements))
    replay.rollback()
    return result


def measure(engine: Engine, city: City, queries: int, naive_every: int) -> dict:
    rng = random.Random(7)
    points = query_points(city, queries, rng)
    carts = {mix: [mix.cart(city, rng) for _ in range(queries)] for mix in MIXES}
    radius_m = get_settings().search_max_radius_m
    knn = Timings()
    found = {mix: Timings() for mix in MIXES}
    naive = {mix: Timings() for mix in MIXES if mix.fulfillment == "any"}
    split = {mix: Timings() for mix in SPLIT_MIXES}
    planned = {mix: [0, 0] for mix in SPLIT_MIXES}  # searches that needed a plan, plans found
    mismatches = 0
    # One connection each, held for the run: a query pays for its transaction and its work, not
    # for pool checkouts. The naive query's connection has JIT off (its best chance; the search
    # turns it off itself).
    with (
        engine.connect() as conn,
        engine.connect() as naive_conn,
        engine.connect() as replay,
        Session(bind=conn) as session,
        Session(bind=naive_conn) as naive_session,
    ):
        naive_session.execute(text("SET jit = off"))
        naive_session.commit()
        # Warm the caches the way a running service has them warm.
        for lat, lon in points[:20]:
            for mix in MIXES:
                search.search_stores(session, lat=lat, lon=lon, lines=carts[mix][0], limit=LIMIT)
            session.commit()
        columns = [
            TextColumn("{task.description:<34}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        ]
        # Refreshed by hand between queries: a refresh thread would steal time from them.
        with Progress(*columns, console=console, auto_refresh=False) as progress:
            task = progress.add_task("queries at random points", total=queries)
            # Round-robin over the mixes, so background noise lands on all of them alike.
            for i, (lat, lon) in enumerate(points):
                _run(engine, session, replay, knn, _knn_probe, session, lat, lon)
                for mix in MIXES:
                    cart = carts[mix][i]
                    matches = _run(
                        engine,
                        session,
                        replay,
                        found[mix],
                        search.search_stores,
                        session,
                        lat=lat,
                        lon=lon,
                        lines=cart,
                        fulfillment=mix.fulfillment,
                        limit=LIMIT,
                    )
                    if mix in naive and i % naive_every == 0:
                        rows = _run(
                            engine,
                            naive_session,
                            replay,
                            naive[mix],
                            _naive,
                            naive_session,
                            lat,
                            lon,
                            cart,
                            radius_m,
                        )
                        mismatches += _differs(matches, rows)
                    if mix in split:
                        needed, plan = _run(
                            engine,
                            session,
                            replay,
                            split[mix],
                            _search_split,
                            session,
                            lat,
                            lon,
                            cart,
                        )
                        planned[mix][0] += needed
                        planned[mix][1] += plan is not None
                progress.advance(task)
                progress.refresh()
    return {
        "knn": knn,
        "search": found,
        "naive": naive,
        "mismatches": mismatches,
        "split": split,
        "planned": planned,
    }


def _search_split(session: Session, lat: float, lon: float, cart: list[CartLine]):
    """Search as POST /search/stores does with allow_split; return (a plan was needed, plan)."""
    matches = search.search_stores(session, lat=lat, lon=lon, lines=cart, limit=LIMIT)
    if any(m.complete for m in matches):
        return False, None
    return True, split_search.plan_cart(session, lat=lat, lon=lon, lines=cart)


def _knn_probe(session: Session, lat: float, lon: float):
    return session.execute(KNN_PROBE, {"lat": lat, "lon": lon}).all()


def _naive(session: Session, lat: float, lon: float, cart: list[CartLine], radius_m: float):
    return session.execute(
        NAIVE,
        {
            "lat": lat,
            "lon": lon,
            "radius_m": radius_m,
            "limit": LIMIT,
            "product_ids": [line.product_id for line in cart],
            "quantities": [line.quantity for line in cart],
        },
    ).all()


def _differs(matches: list[search.StoreMatch], rows) -> int:
    """Whether the search and the naive query chose different stores (a correctness check)."""
    complete = [r.id for r in sorted((r for r in rows if r.complete), key=lambda r: r.rank)]
    partial = [r.id for r in sorted((r for r in rows if not r.complete), key=lambda r: r.rank)]
    expected = (complete + partial[: max(0, LIMIT - len(complete))])[:LIMIT]
    return int([m.store_id for m in matches] != expected)


# ---------------------------------------------------------------------------------------------
# Report

COLUMNS = (
    "cart",
    "items",
    "fulfillment",
    "p50 ms",
    "p99 ms",
    "p99 / KNN p99",
    "naive p50 ms",
    "naive p99 ms",
    "naive / search p50, p99",
)


def _rows(figures: dict, side: str) -> list[list[str]]:
    knn = getattr(figures["knn"], side)
    knn_p50, knn_p99 = percentile(knn, 50), percentile(knn, 99)
    rows = [["KNN probe (nearest store, no stock)", "-", "-", f"{knn_p50:.2f}", f"{knn_p99:.2f}"]]
    rows[0] += ["1.0", "", "", ""]
    for mix in MIXES:
        times = getattr(figures["search"][mix], side)
        p50, p99 = percentile(times, 50), percentile(times, 99)
        row = [mix.name, str(mix.items), mix.fulfillment, f"{p50:.2f}", f"{p99:.2f}"]
        row.append(f"{p99 / knn_p99:.1f}")
        if mix in figures["naive"]:
            naive = getattr(figures["naive"][mix], side)
            n50, n99 = percentile(naive, 50), percentile(naive, 99)
            row += [f"{n50:.1f}", f"{n99:.1f}", f"{n50 / p50:.0f}x, {n99 / p99:.0f}x"]
        else:
            row += ["", "", ""]
        rows.append(row)
    return rows


SPLIT_COLUMNS = (
    "cart",
    "items",
    "search p50 ms",
    "search p99 ms",
    "allow_split p50 ms",
    "allow_split p99 ms",
    "allow_split / search p50, p99",
    "needed a plan",
    "plan found",
)


def _split_rows(figures: dict, side: str) -> list[list[str]]:
    rows = []
    for mix, timings in figures["split"].items():
        plain = getattr(figures["search"][mix], side)
        times = getattr(timings, side)
        p50, p99 = percentile(plain, 50), percentile(plain, 99)
        s50, s99 = percentile(times, 50), percentile(times, 99)
        needed, found = figures["planned"][mix]
        rows.append(
            [
                mix.name,
                str(mix.items),
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{s50:.2f}",
                f"{s99:.2f}",
                f"{s50 / p50:.1f}x, {s99 / p99:.1f}x",
                f"{needed}/{len(times)}",
                f"{found}/{needed}",
            ]
        )
    return rows


def _table(title: str, rows: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in ("cart", "fulfillment") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown(rows: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _targets(figures: dict, side: str) -> str:
    """Say how far the figures are from the targets: p99 within 10x the probe's, and rare carts
    at least 20x faster than the naive query."""
    knn_p99 = percentile(getattr(figures["knn"], side), 99)
    worst = max(percentile(getattr(t, side), 99) / knn_p99 for t in figures["search"].values())
    rare = [mix for mix in figures["naive"] if mix.pool == "rare"]
    speedups = [
        percentile(getattr(figures["naive"][mix], side), q)
        / percentile(getattr(figures["search"][mix], side), q)
        for mix in rare
        for q in (50, 99)
    ]
    return (
        f"worst p99 / KNN p99 {worst:.1f} (target at most 10); rare carts "
        f"{min(speedups):.0f}x to {max(speedups):.0f}x faster than naive at p50 and p99 "
        "(target at least 20x)"
    )


def report(city: City, meta: dict, figures: dict, queries: int, naive_every: int) -> str:
    """Print the figures as tables; return them as the Markdown section for the docs."""
    server, client = _rows(figures, "server"), _rows(figures, "client")
    knn_client = percentile(figures["knn"].client, 50)
    knn_server = percentile(figures["knn"].server, 50)
    searches = figures["search"].values()
    statements = sum(sum(t.statements) for t in searches) / sum(len(t.statements) for t in searches)
    planning_share = sum(sum(t.planning) for t in searches) / sum(sum(t.server) for t in searches)
    console.print(_table(f"Client side: the service call, {queries} points per row", client))
    console.print(_table(f"Server side: planning + execution, {queries} points per row", server))
    split_client = _split_rows(figures, "client")
    console.print(
        _table(f"allow_split, client side, {queries} points per row", split_client, SPLIT_COLUMNS)
    )
    checked = sum(len(t.client) for t in figures["naive"].values())
    console.print(
        f"search and naive answers differed on {figures['mismatches']} of {checked} queries"
    )

    lines = [
        "## Search",
        "",
        "Nearest stocked store (`stores/search.py`): p50/p99 of a search (limit 5, radius 50 km)",
        "next to a bare KNN probe (`ORDER BY location <-> point LIMIT 1`) and a naive query that",
        "tests the stock of every store in the radius and sorts by distance (JIT off, to give it",
        "its best chance).",
        "",
        "Command: `bash scripts/bench.sh search`. The first run generates the city, later runs",
        "reuse it (`O2O_BENCH_REGENERATE=1` forces a new one; `O2O_BENCH_WRITE_DOCS=1` rewrites",
        "this section; `python -m benchmarks.search --explain` prints the plans)."
        + (
            ""
            if (queries, naive_every) == (DEFAULT_QUERIES, DEFAULT_NAIVE_EVERY)
            else f" This run: `python -m benchmarks.search --queries {queries} --naive-every"
            f" {naive_every}` in bench.sh's environment."
        ),
        "",
        f"City: {city.stores:,} stores ({city.delivery_share:.0%} delivering, zones of 3-6 km) in a "
        f"{2 * city.half_side_km:.0f} km square with a dense core; {city.products:,} products "
        f"({city.staples} staples held by ~{city.staple_share:.0%} of stores, {city.rare} rare ones "
        f"by ~{city.rare_share:.0%}, the rest by ~{city.regular_share:.1%}); {meta['lots']:,} lots "
        f"({city.expiring_share:.0%} inside the 30-day shelf life, {city.reserved_share:.0%} fully "
        f"reserved). Generated in {meta['generation_s']:.0f} s in set-based SQL (lots indexes built "
        "after the load).",
        "",
        f"{queries} random points per row; each cart is drawn at random from its pool (common: "
        "staples; rare: rare products; rare + common: one rare and two staples). The naive query "
        f"ran on one point in {naive_every} ({checked} queries), and its answers differed from the "
        f"search's on {figures['mismatches']} of them.",
        "",
        "Client side, the figures the targets are judged on: the service call as a request makes",
        "it (`search_stores` in its own transaction through SQLAlchemy, committed as a request's",
        "session is; the probe and the naive query alike), so it counts the BEGIN and COMMIT, the",
        "driver and SQLAlchemy work of each statement and building the results. The bare probe",
        f"takes {knn_client:.2f} ms here at p50 against {knn_server:.2f} ms server side: that",
        "difference is the price of any call.",
        "",
        *_markdown(client),
        "",
        f"Client side: {_targets(figures, 'client')}.",
        "",
        "Server side, a diagnostic: planning + execution time as `EXPLAIN ANALYZE` reports it,",
        "summed over the statements of one call, replayed on another connection right after each",
        "timed call. A search sent "
        f"{statements:.2f} statements on average (one, a second when fewer than 5 stores hold the",
        "whole cart, and one more when the cart has a product whose statistics the process has not",
        "read in the last few minutes). Planning is "
        f"{planning_share:.0%} of the replayed time of a search;",
        "the timed call runs statements the driver has prepared, which skips parsing them, but",
        "PostgreSQL still makes a custom plan for most of them (see `stores/search.py`).",
        "",
        *_markdown(server),
        "",
        f"Server side: {_targets(figures, 'server')}.",
        "",
        "The cost of `allow_split` (client side, the same carts at the same points, timed right",
        "after the plain search): the search, then, when no store in the radius holds the whole",
        "cart, the split plan (`stores/split_search.py`: one walk of the store index for the 40",
        "nearest stores holding any line, then the pure planner). A cart some store holds costs",
        "what the plain search does.",
        "",
        *_markdown(split_client, SPLIT_COLUMNS),
        "",
        "Plans (see `stores/search.py`): common carts walk the GiST index nearest first and stop",
        "after a few stores; rare carts start from the stores holding the rarest lines (one",
        "index-only range of `ix_lots_product_store` per rare product, then `ix_stores_id_search`)",
        "and, when fewer than 5 stores hold everything, walk the index once more for the nearest",
        "partial ones. The cluster runs with `random_page_cost = 1.1` and `jit = off`",
        "(`scripts/platform.sh`).",
        "",
        f"Machine: {_machine()}.",
        "",
    ]
    return "\n".join(lines)


def _machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, load average during the run {load}"


def write_docs(section: str) -> None:
    """Replace (or add) the Search section of docs/BENCHMARKS.md, leaving other sections alone."""
    DOCS.parent.mkdir(exist_ok=True)
    current = (
        DOCS.read_text()
        if DOCS.exists()
        else "# Benchmarks\n\nFigures from `make bench`, `make load` and `make simulate`; each section "
        "says its command.\n"
    )
    start = current.find("\n## Search\n")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + section
    else:
        end = current.find("\n## ", start + 1)
        updated = current[: start + 1] + section + (current[end:] if end != -1 else "")
    DOCS.write_text(updated.rstrip("\n") + "\n")


def _statements(
    engine: Engine, run: Callable[[], object]
) -> tuple[object, list[tuple[str, object]]]:
    """Run `run`; return its result and the SQL statements it sent with their parameters."""
    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        result = run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return result, captured


def explain(engine: Engine, city: City) -> None:
    """Print EXPLAIN ANALYZE of every statement one search per cart mix runs."""
    lat, lon = query_points(city, 1, random.Random(11))[0]
    rng = random.Random(12)
    for mix in MIXES:
        with Session(engine) as session:
            run = functools.partial(
                search.search_stores,
                session,
                lat=lat,
                lon=lon,
                lines=mix.cart(city, rng),
                fulfillment=mix.fulfillment,
                limit=LIMIT,
            )
            _, statements = _statements(engine, run)
            console.rule(f"{mix.name}, {mix.items} items, {mix.fulfillment}")
            for statement, parameters in statements:
                if statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
                    continue  # the savepoint around each walk (stores/proximity.py) has no plan
                plan = session.connection().exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters
                )
                console.print("\n".join(row[0] for row in plan), highlight=False)
            session.rollback()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regenerate", action="store_true", default=_env("O2O_BENCH_REGENERATE"))
    parser.add_argument(
        "--queries", type=int, default=DEFAULT_QUERIES, help="random points per cart mix"
    )
    parser.add_argument(
        "--naive-every",
        type=int,
        default=DEFAULT_NAIVE_EVERY,
        help="run the naive query on every n-th point",
    )
    parser.add_argument("--write-docs", action="store_true", default=_env("O2O_BENCH_WRITE_DOCS"))
    parser.add_argument(
        "--explain", action="store_true", help="print the plans of one search per mix and stop"
    )
    args = parser.parse_args()

    city = City()
    # Connections held for the run, no pre-ping: every timed query pays for its own work and its
    # transaction's BEGIN and COMMIT, not for pool checks.
    engine = create_engine(get_settings().database_url, pool_size=3, max_overflow=0)
    with engine.begin() as conn:
        meta = _meta(conn)
    if args.regenerate or meta is None or meta["params"] != asdict(city):
        console.print("generating the benchmark city")
        generate(engine, city)
        with engine.begin() as conn:
            meta = _meta(conn)
    else:
        console.print(
            f"reusing the benchmark city generated in {meta['generation_s']:.0f} s (--regenerate for a new one)"
        )
    if args.explain:
        explain(engine, city)
        return 0
    figures = measure(engine, city, args.queries, args.naive_every)
    section = report(city, meta, figures, args.queries, args.naive_every)
    print(section)
    if args.write_docs:
        write_docs(section)
        console.print(f"wrote the Search section of {DOCS.relative_to(ROOT)}")
    return 0


def _env(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")


if __name__ == "__main__":
    sys.exit(main())
