"""Load test: the platform under uvicorn with the production worker count, next to the ceiling of
its stack measured in the same run.

Run with `make load` (`bash scripts/load.sh`). For each city (the demo city, database
`o2o_load_demo`, and the 10,000-store benchmark city, `o2o_bench`):

1. the reference (`benchmarks/reference.py`: the nearby list's SQL on psycopg's async pool, no
   framework), served as the platform is (the image's server, `o2o.serve`: uvicorn's workers,
   each accepting on a socket of its own) with the same workers, loaded by wrk at 64 connections;
2. the platform's `GET /stores/nearby` and `POST /search/stores`, loaded the same way;
3. the reference again. Both servers stay up and are loaded one at a time; every ratio is to the
   two reference runs taken together (`wrk.mean`), which bracket the platform's rows in time.

Then, on the benchmark city's server: order placement on one hot product at 64 connections (a
timed phase with stock for everyone, then an exact sell-out) and a rush of 100 couriers claiming
from a pool of open jobs (`benchmarks/load_races.py`). Every figure is printed as a ratio to the
reference, each after a warm-up (the HTTP rows' warm-ups all run before the first measured row);
then what each row's requests cost the machine in CPU time, by who spent it (the server under
load, PostgreSQL, Redis, the load client: `benchmarks/cpu_split.py`), each worker's resident
memory after the load and the load average.
`--write-docs` (or `O2O_BENCH_WRITE_DOCS=1`) records the output in docs/BENCHMARKS.md.

Rate limits and per-patient caps are raised for the server processes (environment settings) so
that the load is not turned into 429s; they are still checked in Redis on every request.
"""

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from benchmarks import cpu_split, in_process, load_races, wrk
from benchmarks.search import City, _meta, query_points
from o2o.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
ARTIFACTS = ROOT / "artifacts"
# Limits lifted for the load run only (per-client windows meant for people, not a load tool).
RAISED_LIMITS = {
    "O2O_SEARCH_RATE_LIMIT": "10000000/minute",
    "O2O_ORDER_RATE_LIMIT": "10000000/minute",
    "O2O_MAX_OPEN_UNITS_PER_PRODUCT": "1000000",
    "O2O_MAX_UNPAID_ORDERS": "1000000",
    "O2O_DISPATCH_CLAIM_RATE_LIMIT": "10000000/hour",
    # The most a courier may hold (the settings' bound); the rush delivers held jobs behind them.
    "O2O_DISPATCH_MAX_ACTIVE_JOBS": "10",
}
MISSING_CITY = 3
# Each server's requests are first run this many seconds untimed (the HTTP rows' three request
# sets one after another, then the measured rows; each race right before its own timing):
# connections opened, statements prepared and planned, caches warm.
WARMUP_S = 3
DEMO_CENTRE = (31.2304, 121.4737)


def production_workers() -> int:
    """Return the uvicorn worker count the Dockerfile deploys with."""
    match = re.search(r'"--workers",\s*"(\d+)"', (ROOT / "Dockerfile").read_text())
    return int(match.group(1)) if match else 4


# ---------------------------------------------------------------------------------------------
# Servers


def start_server(
    app: str, port: int, workers: int, database_url: str, log: str
) -> subprocess.Popen:
    """Serve `app` with uvicorn and `workers` workers on database_url; wait until it answers."""
    env = dict(os.environ)
    env.update(RAISED_LIMITS)
    env["O2O_ENV"] = "production"
    env["O2O_DATABASE_URL"] = database_url
    ARTIFACTS.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        # The image's server: uvicorn's workers, each on a socket of its own (`o2o.serve`).
        [sys.executable, "-m", "o2o.serve", app, "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers),
         # On two shared cores a worker still importing the app can miss the supervisor's
         # 5-second ping and be killed and restarted over and over.
         "--timeout-worker-healthcheck", "60"],
        cwd=ROOT,
        env=env,
        stdout=open(ARTIFACTS / log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    probe = "/readyz" if app == "main:app" else f"/nearby?lat={DEMO_CENTRE[0]}&lon={DEMO_CENTRE[1]}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited; see {ARTIFACTS / log}")
        # Every worker started (not just the first), then an answer.
        started = (
            (ARTIFACTS / log).read_text(errors="replace").count("Application startup complete")
        )
        try:
            if (
                started >= workers
                and httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=30).status_code == 200
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(proc)
    raise SystemExit("uvicorn did not become ready in 300 s")


def worker_memory_mb(proc: subprocess.Popen) -> list[float]:
    """Return the resident memory (MiB) of each of the server's worker processes."""
    out = subprocess.run(
        ["ps", "-o", "rss=,args=", "--ppid", str(proc.pid)], capture_output=True, text=True
    ).stdout
    # uvicorn's workers; not multiprocessing's resource tracker beside them.
    return [
        int(line.split()[0]) / 1024
        for line in out.splitlines()
        if line.strip() and "resource_tracker" not in line
    ]


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Requests


def nearby_requests(points) -> list[tuple[str, str, None]]:
    return [
        ("GET", f"/api/v1/stores/nearby?lat={lat:.6f}&lon={lon:.6f}", None) for lat, lon in points
    ]


def reference_requests(points) -> list[tuple[str, str, None]]:
    return [("GET", f"/nearby?lat={lat:.6f}&lon={lon:.6f}", None) for lat, lon in points]


def search_requests(points, products: list[int], rng: random.Random) -> list[tuple]:
    out = []
    for lat, lon in points:
        items = rng.sample(products, rng.randint(1, 3))
        body = {
            "location": {"lat": lat, "lon": lon},
            "items": [{"product_id": p, "quantity": 1} for p in items],
            "fulfillment": "any",
            "limit": 5,
        }
        out.append(("POST", "/api/v1/search/stores", json.dumps(body)))
    return out


def demo_points(n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Points within about 6 km of the demo city's centre."""
    return [
        (DEMO_CENTRE[0] + rng.uniform(-0.05, 0.05), DEMO_CENTRE[1] + rng.uniform(-0.06, 0.06))
        for _ in range(n)
    ]


def sellable_products(url: str, limit: int) -> list[int]:
    """Products anyone may order that the city's stores hold."""
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = list(
            conn.scalars(
                text(
                    "SELECT p.id FROM products p WHERE NOT p.rx_only AND NOT p.controlled "
                    "AND EXISTS (SELECT 1 FROM lots l WHERE l.product_id = p.id) "
                    "ORDER BY p.id LIMIT :n"
                ),
                {"n": limit},
            )
        )
    engine.dispose()
    return ids


# ---------------------------------------------------------------------------------------------
# The run


def _fmt(name: str, r: wrk.Result, ref: wrk.Result | None) -> str:
    ratio = (
        f"{r.rps / ref.rps:.2f} | {r.p99_ms / ref.p99_ms:.2f}" if ref and ref.rps else "1.00 | 1.00"
    )
    return (
        f"| {name} | {r.requests} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | "
        f"{ratio} |"
    )


def run(args) -> str:
    port = args.port
    workers = args.workers
    lines: list[str] = []
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    rng = random.Random(11)
    cities = {
        "demo city": (args.demo_url, demo_points(500, rng), sellable_products(args.demo_url, 40)),
        "10,000-store city": (
            args.bench_url,
            query_points(City(), 500, random.Random(11)),
            list(range(1, City().staples + 1)),
        ),
    }
    table = [
        "| endpoint | requests | req/s | p50 ms | p99 ms | errors | throughput / ref | p99 / ref |",
        "|---|---|---|---|---|---|---|---|",
    ]
    targets: list[str] = []
    memory: dict[str, list[float]] = {}
    races = ""
    # (row, requests, where the cores went) for each measured row.
    spent: list[tuple[str, int, cpu_split.Split]] = []
    base = f"http://127.0.0.1:{port}"
    ref_base = f"http://127.0.0.1:{port + 1}"
    for city, (url, points, products) in cities.items():
        # Both servers up, loaded one at a time (an idle server takes no CPU); the reference is
        # measured before the platform's rows and again after them, and each ratio is to the
        # mean of the two, so a machine that grows busier or quieter during the rows moves the
        # reference with them.
        ref_server = start_server(
            "benchmarks.reference:app", port + 1, workers, url, "load-ref.log"
        )
        try:
            server = start_server("main:app", port, workers, url, "load-api.log")
        except BaseException:
            stop_server(ref_server)
            raise
        try:
            ref_reqs = reference_requests(points)
            nearby_reqs = nearby_requests(points)
            search_reqs = search_requests(points, products, random.Random(5))
            ref_row = (ref_base, ref_reqs, ref_server)
            rows = {
                "reference, before the rows": ref_row,
                "GET /stores/nearby": (base, nearby_reqs, server),
                "POST /search/stores": (base, search_reqs, server),
            }
            # Each row's own warm-up: their statements differ.
            for at, reqs, _ in rows.values():
                wrk.run(at, reqs, connections=args.connections, seconds=WARMUP_S)
            rows["reference, after the rows"] = ref_row
            measured = {
                f"{name} ({city})": _measured(at, reqs, serving, args)
                for name, (at, reqs, serving) in rows.items()
            }
            ref_before, nearby, search, ref_after = (r for r, _ in measured.values())
            ref = wrk.mean(ref_before, ref_after)
            for name, (result, split) in measured.items():
                table.append(_fmt(name, result, ref))
                spent.append((name, result.requests, split))
            table.append(_fmt(f"reference, both runs: the ratios' base ({city})", ref, ref))
            for name, r, share in (("nearby", nearby, 0.7), ("search", search, 0.5)):
                met = r.rps >= share * ref.rps and r.p99_ms <= 2 * ref.p99_ms and r.errors == 0
                targets.append(
                    f"{name} ({city}): throughput {r.rps / ref.rps:.2f} of the reference "
                    f"(target >= {share}), p99 {r.p99_ms / ref.p99_ms:.2f}x (target <= 2), "
                    f"{r.errors} errors: {'met' if met else 'missed'}"
                )
            if url == args.bench_url:
                races, race_spent = _races(base, args, ref, server)
                spent += race_spent
            memory[f"reference ({city})"] = worker_memory_mb(ref_server)
            memory[f"platform ({city})"] = worker_memory_mb(server)
        finally:
            try:
                stop_server(server)
            finally:
                stop_server(ref_server)
    lines += [
        f"Servers: uvicorn, {workers} workers each (the Dockerfile's count), each accepting on a "
        f"socket of its own (`o2o.serve`); the reference and the platform both up, loaded one at "
        f"a time, on {os.cpu_count()} cores shared with PostgreSQL, Redis and the load client. "
        "The reference is measured before the platform's rows and after them; every ratio is to "
        "the mean of the two (the reference's row in the ratio columns). HTTP load: wrk, "
        f"{args.connections} connections, {args.seconds:.0f} s per row after a {WARMUP_S} s "
        f"warm-up; the races: asyncio clients, one process, {args.seconds:.0f} s each after a "
        f"{WARMUP_S} s warm-up (every job answered in it still counts in the rush's checks).",
        "Rate limits raised for this run through the environment ("
        + ", ".join(f"{k}={v}" for k, v in RAISED_LIMITS.items())
        + "); they are still checked in Redis on every request.",
        "",
        *table,
        "",
        races,
        "",
        "Targets:",
        *(f"- {t}" for t in targets),
        "",
        *_cores_table(spent),
        "",
        "Resident memory of each worker after the load (MiB):",
        *(f"- {k}: " + ", ".join(f"{v:.0f}" for v in vs) for k, vs in memory.items()),
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"before the run {load_before}, after it "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + ".",
    ]
    return "\n".join(lines)


def _measured(
    at: str, reqs: list[tuple], server: subprocess.Popen, args
) -> tuple[wrk.Result, cpu_split.Split]:
    """One measured row, and where the cores went meanwhile."""
    watch = cpu_split.Watch(server.pid)
    watch.start()
    result = wrk.run(at, reqs, connections=args.connections, seconds=args.seconds)
    return result, watch.stop()


def _cores_table(spent: list[tuple[str, int, cpu_split.Split]]) -> list[str]:
    """Each row's CPU time per request by who spent it, and what the cores allow at that cost."""
    cores = os.cpu_count() or 1
    lines = [
        "Where the cores went: CPU milliseconds per request (per placement, per claim), by who "
        "spent them, from the operating system's counters over each measured row "
        "(`benchmarks/cpu_split.py`; server: the server under load, its workers; client: wrk, or "
        "the races' asyncio clients; rest: the kernel's threads and anything else). At full use, "
        f"the {cores} cores serve at most {cores} x 1000 / (all) requests a second.",
        "",
        "| row | server | PostgreSQL | Redis | client | rest | all | at most / s | cores busy "
        "| stolen by the host |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, requests, split in spent:
        each = [split.ms_per(requests, part) for part in cpu_split.PARTS]
        total = split.ms_per(requests)
        ceiling = f"{cores * 1000 / total:.0f}" if total else "-"
        lines.append(
            f"| {name} | " + " | ".join(f"{v:.2f}" for v in each) + f" | {total:.2f} | "
            f"{ceiling} | {split.cores():.2f} | {split.stolen_ms_per(requests):.2f} |"
        )
    return lines


def _races(
    base: str, args, ref: wrk.Result, server: subprocess.Popen
) -> tuple[str, list[tuple[str, int, cpu_split.Split]]]:
    # Each timed as the HTTP rows are, the cores watched over its timed phase.
    def timed() -> load_races.Timing:
        return load_races.Timing(args.seconds, WARMUP_S, cpu_split.Watch(server.pid))

    sale = load_races.flash_sale(
        base, connections=args.connections, sell_out_units=args.sell_out, timing=timed()
    )
    rush = load_races.courier_rush(base, couriers=args.couriers, jobs=args.jobs, timing=timed())
    sale_name = f"order placement, one hot product, {args.connections} connections"
    rush_name = f"claims, {args.couriers} couriers"
    spent = [(sale_name, sale.done, sale.cpu), (rush_name, rush.done, rush.cpu)]
    c = sale.checks
    exact = c["sold_in_sell_out"] == c["sell_out_units"]
    sale_met = (
        sale.rate >= 300
        and sale.p99_ms <= 500
        and c["oversold_units"] == 0
        and exact
        and c["reserved_without_order"] == 0
    )
    r = rush.checks
    rush_met = (
        rush.rate >= 300
        and rush.p99_ms <= 500
        and r["jobs_answered_twice"] == 0
        and (r["answered_but_not_held"] == 0)
    )
    errors = {**{f"placement {k}": v for k, v in sale.errors.items()},
              **{f"claim {k}": v for k, v in rush.errors.items()}}  # fmt: skip
    return "\n".join(
        [
            "| race | done | per s | p99 ms | per s / ref req/s | p99 / ref p99 |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {race.done} | {race.rate:.0f} | {race.p99_ms:.1f} | "
                f"{race.rate / ref.rps:.2f} | {race.p99_ms / ref.p99_ms:.2f} |"
                for name, race in ((sale_name, sale), (rush_name, rush))
            ),
            "",
            f"Flash sale: oversold units {c['oversold_units']}, reserved units without an order "
            f"{c['reserved_without_order']}; sell-out of {c['sell_out_units']} units: "
            f"{c['sold_in_sell_out']} sold in {c['placed_in_sell_out']} orders "
            f"({'exact' if exact else 'NOT EXACT'}). Target >= 300/s, p99 <= 500 ms: "
            f"{'met' if sale_met else 'missed'}.",
            f"Courier rush: {r['claims_answered']} claims answered, jobs answered twice "
            f"{r['jobs_answered_twice']}, answered but not held {r['answered_but_not_held']}, "
            f"couriers who found the pool empty {r['couriers_finding_the_pool_empty']} (a pool "
            "too small for the run: its rate is then measured on a board running dry). "
            f"Target >= 300/s, p99 <= 500 ms: {'met' if rush_met else 'missed'}.",
            "Errors in the races: "
            + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) if errors else "0")
            + ".",
        ]
    ), spent


def write_docs(body: str) -> None:
    section = (
        "## Load\n\n"
        "The platform under load (`benchmarks/load.py`) next to the ceiling of its stack, from one "
        "run: a bare ASGI endpoint running the nearby list's SQL on psycopg's async pool "
        "(`benchmarks/reference.py`), served the same way and loaded before the platform's rows and "
        "after them; every figure is a ratio to its two runs together. Its last table says where "
        "the cores went in each measured row: each request's CPU time, by who spent it.\n\n"
        "Command: `make load` (`bash scripts/load.sh`; it generates the cities when they are "
        "missing; `O2O_BENCH_WRITE_DOCS=1` rewrites this section).\n\n" + body.rstrip("\n") + "\n\n"
    )
    text_ = DOCS.read_text()
    start = text_.find("\n## Load\n")
    if start == -1:
        text_ = text_.rstrip("\n") + "\n\n" + section
    else:
        end = text_.find("\n## ", start + 1)
        text_ = text_[: start + 1] + section + (text_[end + 1 :] if end != -1 else "")
    DOCS.write_text(text_)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    # Ten seconds: in five, a race's first seconds (statements not yet prepared on the writers'
    # fresh connections) and the machine's passing spikes weigh on the one figure a row gives.
    parser.add_argument("--seconds", type=float, default=10, help="seconds per measured row")
    parser.add_argument("--workers", type=int, default=production_workers())
    parser.add_argument("--couriers", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--sell-out", type=int, default=100, help="units of the sell-out")
    parser.add_argument(
        "--port", type=int, default=18765, help="the platform's port; the reference's is the next"
    )
    parser.add_argument("--demo-url", default=os.environ.get("O2O_LOAD_DEMO_URL", ""))
    parser.add_argument(
        "--write-docs", action="store_true", default=os.environ.get("O2O_BENCH_WRITE_DOCS") == "1"
    )
    args = parser.parse_args()
    args.bench_url = get_settings().database_url
    if not wrk.available():
        raise SystemExit("wrk is missing: `bash scripts/platform.sh deps load` installs it")
    engine = create_engine(args.bench_url)
    with engine.begin() as conn:
        if _meta(conn) is None:
            print(
                "The benchmark city is missing: run `bash scripts/bench.sh search`.",
                file=sys.stderr,
            )
            return MISSING_CITY
    engine.dispose()
    # The servers' keys, which the races sign their tokens with.
    in_process.production_keys()
    body = run(args)
    print(body)
    if args.write_docs:
        write_docs(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
