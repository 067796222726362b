"""Load test: the API under uvicorn with the production worker count, on the benchmark city.

Run with `make load` (`bash scripts/load.sh`). A mixed workload (search 70%, order placement 20%,
order reads 10%) is driven at 64 connections by an asyncio client, after a `/healthz`
baseline measured the same way in the same run. Prints throughput, p50/p99 per endpoint and the
errors; `--write-docs` (or `O2O_BENCH_WRITE_DOCS=1`) records them in docs/BENCHMARKS.md.

Rate limits are raised for the server process (environment settings) so that they do not turn
the load into 429s; everything else runs as deployed. The orders placed are removed afterwards and
their stock given back, so the city stays as the search benchmark generated it.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from benchmarks.search import City, _meta, percentile, query_points
from o2o import clock
from o2o.config import get_settings
from o2o.payments import apps as payment_apps
from o2o.payments.models import PaymentApp
from o2o.security import create_access_token, hash_password

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
ARTIFACTS = ROOT / "artifacts"
LOAD_EMAIL = "load-{n}@load.example.com"
MIX = {"search": 0.7, "place order": 0.2, "read order": 0.1}
# Limits lifted for the load run only (per-client windows meant for people, not a load tool).
RAISED_LIMITS = {
    "O2O_SEARCH_RATE_LIMIT": "10000000/minute",
    "O2O_ORDER_RATE_LIMIT": "10000000/minute",
    # Each load patient orders the same few staples all run long (every order paid at once).
    "O2O_MAX_OPEN_UNITS_PER_PRODUCT": "100000",
}
MISSING_CITY = 3


def production_workers() -> int:
    """Return the uvicorn worker count the Dockerfile deploys with."""
    match = re.search(r'"--workers",\s*"(\d+)"', (ROOT / "Dockerfile").read_text())
    return int(match.group(1)) if match else 4


# ---------------------------------------------------------------------------------------------
# Set-up in the benchmark database


def ensure_patients(engine: Engine, n: int) -> list[int]:
    """Create (once) the load test's patients; return their ids."""
    with engine.begin() as conn:
        have = dict(
            conn.execute(
                text("SELECT email, id FROM users WHERE email LIKE 'load-%@load.example.com'")
            ).all()
        )
        missing = [LOAD_EMAIL.format(n=i) for i in range(n) if LOAD_EMAIL.format(n=i) not in have]
        if missing:
            password_hash = hash_password(secrets.token_urlsafe(16))
            for email in missing:
                have[email] = conn.execute(
                    text(
                        "INSERT INTO users (email, name, password_hash, role, is_active) "
                        "VALUES (:email, 'Load patient', :hash, 'patient', true) RETURNING id"
                    ),
                    {"email": email, "hash": password_hash},
                ).scalar_one()
    return [have[LOAD_EMAIL.format(n=i)] for i in range(n)]


def remove_load_orders(engine: Engine, patient_ids: list[int]) -> int:
    """Delete the load test's orders and give their reserved stock back; return how many."""
    with engine.begin() as conn:
        ids = {"ids": patient_ids}
        conn.execute(
            text(
                """
                UPDATE lots SET reserved = lots.reserved - held.quantity
                FROM (
                    SELECT a.lot_id, sum(a.quantity) AS quantity
                    FROM lot_allocations a
                    JOIN order_lines l ON l.id = a.order_line_id
                    JOIN orders o ON o.id = l.order_id
                    WHERE o.patient_id = ANY(:ids) AND o.status <> 'cancelled'
                    GROUP BY a.lot_id
                ) AS held
                WHERE lots.id = held.lot_id
                """
            ),
            ids,
        )
        conn.execute(
            text(
                "DELETE FROM outbox_events WHERE aggregate_type = 'order' AND aggregate_id IN "
                "(SELECT id::text FROM orders WHERE patient_id = ANY(:ids))"
            ),
            ids,
        )
        conn.execute(text("DELETE FROM idempotency_records WHERE user_id = ANY(:ids)"), ids)
        return conn.execute(text("DELETE FROM orders WHERE patient_id = ANY(:ids)"), ids).rowcount


# ---------------------------------------------------------------------------------------------
# The server


def start_server(port: int, workers: int) -> subprocess.Popen:
    """Serve main:app with uvicorn and the production worker count, limits raised."""
    env = dict(os.environ)
    env.update(RAISED_LIMITS)
    env["O2O_ENV"] = "production"
    # Production refuses to start without its own keys: fresh random ones for this run.
    for name in ("TOKEN_SECRET_KEY", "SESSION_SECRET_KEY", "IDENTITY_PEPPER"):
        env.setdefault(f"O2O_{name}", secrets.token_urlsafe(48))
    ARTIFACTS.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            # The app logs every request itself; uvicorn's access log would log each twice.
            "--no-access-log",
            # On two shared cores a worker still importing the app can miss the supervisor's
            # 5-second ping and be killed and restarted over and over.
            "--timeout-worker-healthcheck",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(ARTIFACTS / "load-api.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited; see {ARTIFACTS / 'load-api.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit("uvicorn did not become ready in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------------------------------
# The client: closed loop, each connection sends its next request when the last one answered


@dataclass
class Plan:
    base: str
    connections: int
    duration_s: float
    mix: dict[str, float]
    tokens: list[str]
    staples: list[int]
    points: list[tuple[float, float]]
    seed: int
    # The load client plays the payment app: each order it places it pays with a signed event.
    payment_app: tuple[int, str] = (0, "")


@dataclass
class Samples:
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_orders: dict[int, str] = field(default_factory=dict)

    def merge(self, other: "Samples") -> None:
        for k, v in other.latencies_ms.items():
            self.latencies_ms.setdefault(k, []).extend(v)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v


EVENTS_PATH = "/api/v1/payments/events"
LOAD_PAYMENT_APP = "Load test payment app"


def ensure_payment_app(engine: Engine) -> tuple[int, str]:
    """Register (once) the payment app the load client plays; return its id and secret."""
    with Session(engine) as session:
        app = session.scalar(select(PaymentApp).where(PaymentApp.name == LOAD_PAYMENT_APP))
        if app is None:
            app, _ = payment_apps.register_app(
                session, name=LOAD_PAYMENT_APP, webhook_url="https://payments.load.test/hooks"
            )
        app_id, secret = app.id, app.secret
        session.commit()
    return app_id, secret


def captured_event(app: tuple[int, str], payment: dict) -> tuple[dict, dict[str, str]]:
    """Return (body, headers) of the signed `captured` event paying `payment` in full."""
    body = {
        "event_id": f"load-{payment['id']}",
        "type": "captured",
        "payment_id": payment["id"],
        "amount_minor": payment["amount_minor"],
        "currency": payment["currency"],
        "psp_reference": "load",
    }
    # Signed over the bytes HttpConnection sends: json.dumps with its default separators.
    timestamp = int(clock.now().timestamp())
    signature = payment_apps.signature_for(app[1], timestamp, json.dumps(body).encode())
    return body, {
        payment_apps.APP_HEADER: str(app[0]),
        payment_apps.TIMESTAMP_HEADER: str(timestamp),
        payment_apps.SIGNATURE_HEADER: signature,
    }


class HttpConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams.

    Hand-written rather than httpx: the client shares the two cores with the server it measures,
    and this costs a fraction of httpx's CPU per request, which would otherwise be taken from
    the server and counted in its latencies.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request, return (status, body); the connection is reused."""
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, headers), 30)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, method, path, body, headers) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, close = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ConnectionError("response without Content-Length")
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _connection(plan: Plan, slot: int, samples: Samples, orders: list[str]) -> None:
    rng = random.Random(plan.seed * 1000 + slot)
    headers = {"Authorization": f"Bearer {plan.tokens[slot % len(plan.tokens)]}"}
    kinds, weights = list(plan.mix), list(plan.mix.values())
    host, port = plan.base.removeprefix("http://").split(":")
    http = HttpConnection(host, int(port))
    deadline = time.perf_counter() + plan.duration_s
    while time.perf_counter() < deadline:
        kind = rng.choices(kinds, weights)[0]
        if kind == "read order" and not orders:
            kind = "place order"
        lat, lon = rng.choice(plan.points)
        started = time.perf_counter()
        try:
            if kind == "healthz":
                status, _ = await http.request("GET", "/healthz")
                ok = status == 200
            elif kind == "search":
                items = rng.sample(plan.staples, rng.randint(1, 3))
                status, _ = await http.request(
                    "POST",
                    "/api/v1/search/stores",
                    {
                        "location": {"lat": lat, "lon": lon},
                        "items": [{"product_id": p, "quantity": 1} for p in items],
                        "fulfillment": "any",
                        "limit": 5,
                    },
                    headers,
                )
                ok = status == 200
            elif kind == "place order":
                status, data = await http.request(
                    "POST",
                    "/api/v1/orders",
                    {
                        "items": [{"product_id": rng.choice(plan.staples), "quantity": 1}],
                        "location": {"lat": lat, "lon": lon},
                        "fulfillment": "pickup",
                    },
                    {**headers, "Idempotency-Key": str(uuid.uuid4())},
                )
                ok = status == 201
                if ok:
                    placed = json.loads(data)
                    orders.append(placed["id"])
                    paid, _ = await http.request(
                        "POST", EVENTS_PATH, *captured_event(plan.payment_app, placed["payment"])
                    )
                    if paid != 200:
                        samples.errors[f"pay order: HTTP {paid}"] = (
                            samples.errors.get(f"pay order: HTTP {paid}", 0) + 1
                        )
            else:
                status, _ = await http.request(
                    "GET", f"/api/v1/orders/{rng.choice(orders)}", headers=headers
                )
                ok = status == 200
            error = None if ok else f"{kind}: HTTP {status}"
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            error = f"{kind}: {type(exc).__name__}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        if error:
            samples.errors[error] = samples.errors.get(error, 0) + 1
        else:
            samples.latencies_ms.setdefault(kind, []).append(elapsed_ms)
    http.close()


async def _drive(plan: Plan, orders: dict[int, list[str]]) -> Samples:
    samples = Samples()
    await asyncio.gather(
        *(
            _connection(plan, slot, samples, orders.setdefault(slot, []))
            for slot in range(plan.connections)
        )
    )
    return samples


def _client_process(args: tuple[Plan, list[Plan]]) -> list[Samples]:
    # One process runs its share of the connections through every phase, so each connection
    # keeps its patient and the orders it placed (read back in the mixed phase).
    _, phases = args
    orders: dict[int, list[str]] = {}
    return [asyncio.run(_drive(plan, orders)) for plan in phases]


def run_phases(
    phases: list[dict], *, base: str, connections: int, processes: int, **common
) -> list[Samples]:
    """Run the phases in turn, the connections split over `processes` client processes."""
    share = [
        connections // processes + (1 if i < connections % processes else 0)
        for i in range(processes)
    ]
    jobs = []
    for i, n in enumerate(share):
        tokens = common["tokens"][sum(share[:i]) : sum(share[: i + 1])]
        plans = [
            Plan(
                base=base,
                connections=n,
                duration_s=p["duration_s"],
                mix=p["mix"],
                tokens=tokens,
                staples=common["staples"],
                points=common["points"],
                seed=i * 100 + k,
            )
            for k, p in enumerate(phases)
        ]
        jobs.append((plans[0], plans))
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        per_process = pool.map(_client_process, jobs)
    merged = [Samples() for _ in phases]
    for results in per_process:
        for m, s in zip(merged, results, strict=True):
            m.merge(s)
    return merged


# ---------------------------------------------------------------------------------------------
# Report


def _row(name: str, values: list[float], duration_s: float) -> str:
    if not values:
        return f"| {name} | 0 | 0 | - | - |"
    return (
        f"| {name} | {len(values)} | {len(values) / duration_s:.0f} | "
        f"{percentile(values, 50):.1f} | {percentile(values, 99):.1f} |"
    )


def report(
    baseline: Samples, mixed: Samples, *, duration_s: float, baseline_s: float, meta: dict
) -> str:
    lines = [
        f"Server: uvicorn, {meta['workers']} workers (the Dockerfile's count), on "
        f"{meta['cores']} cores shared with PostgreSQL, Redis and the load client "
        f"({meta['processes']} process{'es' if meta['processes'] > 1 else ''}).",
        f"Client: asyncio, keep-alive HTTP/1.1, {meta['connections']} connections (closed loop), "
        f"{baseline_s:.0f} s of `/healthz`, then {duration_s:.0f} s of the mix "
        "(search 70%, place order 20%, read order 10%) after a warm-up.",
        "Rate limits raised for this run through the environment ("
        + ", ".join(f"{k}={v}" for k, v in RAISED_LIMITS.items())
        + "); they are still checked in Redis on every request.",
        "",
        "| endpoint | requests | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        _row("GET /healthz (baseline)", baseline.latencies_ms.get("healthz", []), baseline_s),
    ]
    total = 0
    for kind, label in (
        ("search", "POST /search/stores"),
        ("place order", "POST /orders"),
        ("read order", "GET /orders/{id}"),
    ):
        values = mixed.latencies_ms.get(kind, [])
        total += len(values)
        lines.append(_row(label, values, duration_s))
    lines.append(f"| mix, all endpoints | {total} | {total / duration_s:.0f} | | |")
    errors = {**{f"baseline {k}": v for k, v in baseline.errors.items()}, **mixed.errors}
    lines.append("")
    lines.append(
        "Errors: "
        + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) if errors else "0")
        + "."
    )
    healthz_rps = len(baseline.latencies_ms.get("healthz", [])) / baseline_s
    search = mixed.latencies_ms.get("search", [])
    search_rps = len(search) / duration_s
    # Search runs at 70% of the mix; its share of the whole mix's rate is what the target compares.
    lines.append(
        f"Target: search throughput >= 1/3 of /healthz: {search_rps:.0f} / {healthz_rps:.0f} = "
        f"{search_rps / healthz_rps if healthz_rps else 0:.2f} "
        f"({'met' if healthz_rps and search_rps >= healthz_rps / 3 else 'missed'}); "
        f"p99 < 50 ms: search {percentile(search, 99) if search else 0:.1f} ms "
        f"({'met' if search and percentile(search, 99) < 50 else 'missed'}); "
        f"0 errors ({'met' if not errors else 'missed'})."
    )
    # Little's law for a closed loop: connections = throughput x mean latency.
    mix_rps = total / duration_s
    lines.append(
        f"Closed loop: at {meta['connections']} connections the mean latency is connections / "
        f"throughput = {meta['connections'] / mix_rps * 1000 if mix_rps else 0:.0f} ms at the "
        f"mix's {mix_rps:.0f} req/s; a p99 under 50 ms at {meta['connections']} connections "
        f"needs more than {meta['connections'] / 0.05:.0f} req/s."
    )
    lines.append("")
    lines.append(
        f"Machine: {meta['cores']} cores, Python {platform.python_version()}, "
        f"load average before the run {meta['load_before']}."
    )
    return "\n".join(lines)


def write_docs(body: str) -> None:
    section = (
        "## Load\n\n"
        "The API under load (`benchmarks/load.py`): uvicorn with the production worker count on "
        "the search benchmark's city (database `o2o_bench`), a `/healthz` baseline and a mixed "
        "workload measured in the same run.\n\n"
        "Command: `make load` (`bash scripts/load.sh`; it generates the city with "
        "`bash scripts/bench.sh search` when it is missing; `O2O_BENCH_WRITE_DOCS=1` rewrites "
        "this section).\n\n" + body + "\n"
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
    parser.add_argument("--duration", type=float, default=30, help="seconds of the mixed workload")
    parser.add_argument("--baseline", type=float, default=15, help="seconds of /healthz")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--workers", type=int, default=production_workers())
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument(
        "--write-docs", action="store_true", default=os.environ.get("O2O_BENCH_WRITE_DOCS") == "1"
    )
    args = parser.parse_args()

    engine = create_engine(get_settings().database_url)
    city = City()
    with engine.begin() as conn:
        if _meta(conn) is None:
            print(
                "The benchmark city is missing: run `bash scripts/bench.sh search`.",
                file=sys.stderr,
            )
            return MISSING_CITY
        staples = list(
            conn.scalars(
                text(
                    "SELECT id FROM products WHERE id <= :n AND NOT rx_only AND NOT controlled "
                    "ORDER BY id"
                ),
                {"n": city.staples},
            )
        )
    patients = ensure_patients(engine, args.connections)
    payment_app = ensure_payment_app(engine)
    # A secret for this run (production refuses the development one), shared with the server.
    os.environ["O2O_SECRET_KEY"] = secrets.token_urlsafe(48)
    get_settings.cache_clear()
    tokens = [create_access_token(str(pid), role="patient", minutes=60) for pid in patients]
    points = query_points(city, 2000, random.Random(11))
    remove_load_orders(engine, patients)

    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    server = start_server(args.port, args.workers)
    try:
        common = dict(tokens=tokens, staples=staples, points=points, payment_app=payment_app)
        phases = [
            {"duration_s": args.warmup, "mix": MIX},
            {"duration_s": args.baseline, "mix": {"healthz": 1.0}},
            {"duration_s": args.duration, "mix": MIX},
        ]
        _, baseline, mixed = run_phases(
            phases,
            base=f"http://127.0.0.1:{args.port}",
            connections=args.connections,
            processes=args.client_processes,
            **common,
        )
    finally:
        stop_server(server)
        removed = remove_load_orders(engine, patients)
    body = report(
        baseline,
        mixed,
        duration_s=args.duration,
        baseline_s=args.baseline,
        meta={
            "workers": args.workers,
            "cores": os.cpu_count(),
            "processes": args.client_processes,
            "connections": args.connections,
            "load_before": load_before,
        },
    )
    print(body)
    print(f"\n(removed the {removed} orders the run placed and returned their stock)")
    if args.write_docs:
        write_docs(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
