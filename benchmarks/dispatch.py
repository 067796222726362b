"""Dispatch benchmark: claim throughput and latency with 100 concurrent couriers, and the SLA
monitor's time over 100,000 open deliveries.

Phase 1 (claims): a city of stores with thousands of open jobs; 100 couriers, each on its own
connection, claim through the real service (`claim_next_job`: courier lock, job limit, the
ranked FOR UPDATE SKIP LOCKED pick) and commit, then close the job and claim again until the
pool is empty. Checked after: every job claimed exactly once.

Phase 2 (monitor): 100,000 open deliveries in every phase (released, preparing, ready, claimed,
out for delivery) released over the last 130 minutes, so some are at risk and some breached;
the monitor runs three times (first run with its inserts, a re-run, and a minute later).

Everything is generated in set-based SQL in a site of its own and removed afterwards.
Run: `bash scripts/bench.sh dispatch` (options: `python -m benchmarks.dispatch --help`).
"""

import argparse
import json
import os
import random
import statistics
import threading
import time
from datetime import timedelta

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from benchmarks import analyse
from benchmarks.search import percentile
from dispatch import monitor, pool
from o2o import clock
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.users.models import User

# Away from the other benchmarks' data, so their stores never mix with these.
SITE = (-33.9249, 18.4241)
TAG = "bench-dispatch"
console = Console(stderr=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared with other runs."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def cleanup() -> None:
    """Remove everything a previous run created (stores, their orders and jobs, couriers)."""
    with session_scope() as s:
        stores = f"SELECT id FROM stores WHERE address = '{TAG}'"
        s.execute(
            text(
                "DELETE FROM outbox_events WHERE event_type LIKE 'order.sla_%' "
                f"AND (payload->>'store_id')::int IN ({stores})"
            )
        )
        # Children first, set-based: the per-row ON DELETE CASCADE of 100,000 orders is slow.
        for table in ("dispatch_jobs", "sla_escalations", "sla_breaches"):
            s.execute(text(f"DELETE FROM {table} WHERE store_id IN ({stores})"))
        s.execute(text(f"DELETE FROM orders WHERE store_id IN ({stores})"))
        s.execute(
            text(
                f"DELETE FROM couriers WHERE user_id IN (SELECT id FROM users WHERE email LIKE '{TAG}-%')"
            )
        )
        s.execute(text(f"DELETE FROM users WHERE email LIKE '{TAG}-%'"))
        s.execute(text(f"DELETE FROM stores WHERE address = '{TAG}'"))


def make_city(stores: int, spread_m: float) -> None:
    """Stores around the site and one patient for all orders."""
    with session_scope() as s:
        s.execute(text("SELECT setseed(0.42)"))
        s.execute(
            text(
                f"""
                INSERT INTO stores (name, address, location, timezone, offers_delivery,
                                    prep_minutes, delivery_fee_minor, courier_speed_kmh,
                                    detour_factor)
                SELECT 'Bench dispatch store ' || g, '{TAG}',
                       ST_Project(ST_MakePoint(:lon, :lat)::geography,
                                  sqrt(random()) * :spread, random() * 2 * pi()),
                       'UTC', true, 10, 500, 18, 1.35
                FROM generate_series(1, :n) g
                """
            ),
            {"lat": SITE[0], "lon": SITE[1], "spread": spread_m, "n": stores},
        )
        s.execute(
            text(
                "INSERT INTO users (email, name, password_hash, role) "
                f"VALUES ('{TAG}-patient@bench.example.com', 'Bench patient', 'x', 'patient')"
            )
        )


def make_couriers(n: int, spread_m: float, *, area_m: float) -> list[int]:
    """Couriers whose service area covers the whole bench city, placed at random in it."""
    with session_scope() as s:
        ids = s.scalars(
            text(
                f"""
                INSERT INTO users (email, name, password_hash, role)
                SELECT '{TAG}-courier-' || g || '-' || :run || '@bench.example.com',
                       'Bench courier', 'x', 'courier'
                FROM generate_series(1, :n) g
                RETURNING id
                """
            ),
            {"n": n, "run": time.time_ns()},
        ).all()
        s.execute(
            text(
                """
                INSERT INTO couriers (user_id, service_area, location, location_at)
                SELECT u,
                       ST_Multi(ST_Buffer(ST_MakePoint(:lon, :lat)::geography, :area)::geometry)
                           ::geography,
                       ST_Project(ST_MakePoint(:lon, :lat)::geography,
                                  sqrt(random()) * :spread, random() * 2 * pi()),
                       now()
                FROM unnest(CAST(:ids AS int[])) u
                """
            ),
            {"lat": SITE[0], "lon": SITE[1], "area": area_m, "spread": spread_m, "ids": list(ids)},
        )
        return list(ids)


_ORDERS_SQL = f"""
WITH s AS (
    SELECT id, location, row_number() OVER (ORDER BY id) AS k, count(*) OVER () AS n
    FROM stores WHERE address = '{TAG}'
),
g AS (
    SELECT i, 1 + (i % (SELECT count(*) FROM s)) AS k,
           now() - make_interval(secs => random() * :released_within_s) AS released_at,
           random() AS phase
    FROM generate_series(1, :n) i
)
INSERT INTO orders (id, patient_id, store_id, status, fulfillment, requested_fulfillment,
                    routing_reason, delivery_location, currency, subtotal_minor,
                    delivery_fee_minor, pickup_code, delivery_code, released_at, ready_at,
                    sla_deadline)
SELECT gen_random_uuid(),
       (SELECT id FROM users WHERE email = '{TAG}-patient@bench.example.com'),
       s.id,
       CAST(CASE WHEN g.phase < :released THEN 'released'
                 WHEN g.phase < :preparing THEN 'preparing'
                 WHEN g.phase < :ready THEN 'ready'
                 ELSE 'out_for_delivery' END AS order_status),
       'delivery', 'delivery', 'bench',
       ST_Project(s.location, 300 + random() * 3000, random() * 2 * pi()),
       'CNY', 3000, 500, '000000', '123456', g.released_at,
       CASE WHEN g.phase >= :preparing THEN g.released_at + interval '12 minutes' END,
       g.released_at + interval '120 minutes'
FROM g JOIN s ON s.k = g.k
"""

# Ready and out-for-delivery orders get their live job; claimed and picked-up jobs get a courier
# (round robin) in the same statement: a taken job without one breaks a CHECK constraint.
_JOBS_SQL = f"""
WITH c AS (
    SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS k
    FROM couriers WHERE user_id = ANY(CAST(:ids AS int[]))
),
o AS (
    SELECT o.id, o.store_id, o.delivery_location, o.sla_deadline, o.ready_at,
           CAST(CASE WHEN o.status = 'out_for_delivery' THEN 'picked_up'
                     WHEN random() < :claimed_share THEN 'claimed'
                     ELSE 'open' END AS job_status) AS status,
           row_number() OVER (ORDER BY o.id) AS k
    FROM orders o JOIN stores s ON s.id = o.store_id
    WHERE s.address = '{TAG}' AND o.status IN ('ready', 'out_for_delivery')
)
INSERT INTO dispatch_jobs (id, order_id, store_id, dropoff, deadline, priority, status, attempt,
                           courier_id, opened_at, claimed_at, pickup_due_at, picked_up_at)
SELECT gen_random_uuid(), o.id, o.store_id, o.delivery_location, o.sla_deadline, 0, o.status, 1,
       CASE WHEN o.status <> 'open' THEN c.user_id END,
       o.ready_at,
       CASE WHEN o.status <> 'open' THEN o.ready_at + interval '3 minutes' END,
       CASE WHEN o.status <> 'open' THEN o.ready_at + interval '33 minutes' END,
       CASE WHEN o.status = 'picked_up' THEN o.ready_at + interval '10 minutes' END
FROM o LEFT JOIN c ON c.k = o.k % GREATEST(1, (SELECT count(*) FROM c))
"""


def seed_rush(couriers: int, jobs: int) -> list[int]:
    """A city of 40 stores with `couriers` couriers and `jobs` open jobs, every order ready;
    return the couriers' ids.

    The tables the pool filled are analysed before anyone claims: the claim and the answer's
    view join each job to its order by key, and with the statistics of an empty orders table
    PostgreSQL plans that join as a scan of every order for each job (until autovacuum analyses
    the table, a minute or so later), where a served database has statistics of its own."""
    cleanup()
    make_city(stores=40, spread_m=2500)
    courier_ids = make_couriers(couriers, 2500, area_m=6000)
    with session_scope() as s:
        s.execute(
            text(_ORDERS_SQL),
            {
                "n": jobs,
                "released_within_s": 90 * 60,
                "released": 0.0,
                "preparing": 0.0,
                "ready": 1.01,
            },
        )
        s.execute(text(_JOBS_SQL), {"claimed_share": 0.0, "ids": courier_ids})
        analyse(s, *("orders", "dispatch_jobs", "couriers"))
    return courier_ids


def claims_phase(couriers: int, jobs: int) -> dict:
    """Claim every job of a pool with `couriers` threads; measure throughput and latency."""
    courier_ids = seed_rush(couriers, jobs)
    engine = create_engine(get_settings().database_url, poolclass=NullPool)
    latencies: list[float] = []
    claimed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(couriers + 1)
    rng = random.Random(7)
    positions = {
        cid: (SITE[0] + rng.uniform(-0.015, 0.015), SITE[1] + rng.uniform(-0.015, 0.015))
        for cid in courier_ids
    }

    def run(courier_id: int) -> None:
        lat, lon = positions[courier_id]
        mine: list[float] = []
        got: list[str] = []
        try:
            # One connection per courier for the whole run, as behind the API's pool: opening a
            # connection per transaction would measure connection set-up, not claims.
            with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as session:
                courier = session.get(User, courier_id)
                session.commit()
                barrier.wait(timeout=120)
                while True:
                    t0 = time.perf_counter()
                    job = pool.claim_next_job(session, courier, lat=lat, lon=lon)
                    session.commit()
                    mine.append((time.perf_counter() - t0) * 1000)
                    if job is None:
                        break
                    got.append(str(job.id))
                    # The courier "delivers" (not timed) so their slot frees for the next claim.
                    session.execute(
                        text(
                            "UPDATE dispatch_jobs SET status = 'delivered', closed_at = now() "
                            "WHERE id = :id"
                        ),
                        {"id": job.id},
                    )
                    session.commit()
        except BaseException as exc:
            errors.append(exc)
        with lock:
            latencies.extend(mine)
            claimed.extend(got)

    threads = [threading.Thread(target=run, args=(cid,)) for cid in courier_ids]
    for t in threads:
        t.start()
    barrier.wait(timeout=120)
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    engine.dispose()
    if errors:
        raise errors[0]
    with session_scope() as s:
        left_open = s.scalar(
            text(
                "SELECT count(*) FROM dispatch_jobs j JOIN stores s ON s.id = j.store_id "
                f"WHERE s.address = '{TAG}' AND j.status = 'open'"
            )
        )
    return {
        "couriers": couriers,
        "jobs": jobs,
        "claims": len(claimed),
        "duplicates": len(claimed) - len(set(claimed)),
        "left_open": left_open,
        "seconds": round(wall, 2),
        "claims_per_s": round(len(claimed) / wall, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
    }


def monitor_phase(orders: int) -> dict:
    """Time the SLA monitor over `orders` open deliveries in every phase."""
    cleanup()
    make_city(stores=200, spread_m=12_000)
    courier_ids = make_couriers(2000, 12_000, area_m=20_000)
    t0 = time.perf_counter()
    with session_scope() as s:
        s.execute(text("SELECT setseed(0.17)"))
        s.execute(
            text(_ORDERS_SQL),
            {
                "n": orders,
                "released_within_s": 130 * 60,
                "released": 0.2,
                "preparing": 0.4,
                "ready": 0.85,
            },
        )
        s.execute(text(_JOBS_SQL), {"claimed_share": 0.35, "ids": courier_ids})
        analyse(s, *("orders", "dispatch_jobs", "couriers", "stores"))
    seeded_s = time.perf_counter() - t0
    with session_scope() as s:
        open_deliveries = s.scalar(
            text(
                "SELECT count(*) FROM orders WHERE fulfillment = 'delivery' "
                "AND status IN ('released', 'preparing', 'ready', 'out_for_delivery')"
            )
        )
    runs = []
    start = clock.now()
    # The clock is injected: "a minute later" needs no real minute of waiting.
    for label, now in (
        ("first run", start),
        ("re-run", start),
        ("a minute later", start + timedelta(minutes=1)),
    ):
        t0 = time.perf_counter()
        with session_scope() as s:
            result = monitor.run(s, now=now)
        runs.append(
            {
                "run": label,
                "seconds": round(time.perf_counter() - t0, 2),
                "at_risk": result.at_risk,
                "breached": result.breached,
                "jobs_escalated": result.jobs_escalated,
            }
        )
    return {"open_deliveries": open_deliveries, "seeded_s": round(seeded_s, 1), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--couriers", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="leave the generated rows in place")
    args = parser.parse_args()

    load_at_start = load_average()
    console.print(f"claims: {args.couriers} couriers, {args.jobs} open jobs ...")
    claims = claims_phase(args.couriers, args.jobs)
    load_after_claims = load_average()
    console.print(f"monitor: {args.orders:,} open deliveries ...")
    sla = monitor_phase(args.orders)
    load_at_end = load_average()
    if not args.keep:
        cleanup()

    table = Table(title="Dispatch benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("couriers claiming at once", str(claims["couriers"]))
    table.add_row(
        "jobs claimed (duplicates, left open)",
        f"{claims['claims']} ({claims['duplicates']}, {claims['left_open']})",
    )
    table.add_row("claims per second", f"{claims['claims_per_s']}")
    table.add_row(
        "claim p50 / p99 / max (ms)",
        f"{claims['p50_ms']} / {claims['p99_ms']} / {claims['max_ms']}",
    )
    table.add_row("open deliveries monitored", f"{sla['open_deliveries']:,}")
    for run in sla["runs"]:
        table.add_row(
            f"monitor {run['run']} (s)",
            f"{run['seconds']} (at risk {run['at_risk']:,}, breached {run['breached']:,})",
        )
    table.add_row("load average at start", load_at_start)
    table.add_row("load average after claims", load_after_claims)
    table.add_row("load average at end", load_at_end)
    Console().print(table)
    load = {"start": load_at_start, "after_claims": load_after_claims, "end": load_at_end}
    print(json.dumps({"claims": claims, "monitor": sla, "load_average": load}, indent=2))


if __name__ == "__main__":
    main()
