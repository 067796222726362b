"""The races of `make load`, over HTTP against the served platform: a flash sale (every connection
ordering one hot product) and a courier rush (100 couriers claiming at once).

The clients keep state a request generator like wrk cannot (each patient's token, a fresh
Idempotency-Key per placement, the jobs each courier got), so they run on asyncio in one process
over hand-written keep-alive connections: one interpreter for every connection, a fraction of
an HTTP library's CPU per request.
"""

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvloop
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from benchmarks import cpu_split
from benchmarks import dispatch as dispatch_bench
from benchmarks import orders as orders_bench
from benchmarks.search import percentile
from o2o.db import session_scope
from o2o.security import create_access_token


class HttpConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request, return (status, body); the connection is reused."""
        try:
            # A timeout around the exchange, not `wait_for` (a task of its own per request).
            async with asyncio.timeout(60):
                return await self._exchange(method, path, body, headers)
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
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class RaceResult:
    """What one race measured."""

    done: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    # Where the cores went over the timed phase (when a watch was given).
    cpu: cpu_split.Split | None = None

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99) if self.latencies_ms else 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


@dataclass(frozen=True)
class Timing:
    """A race's timed phase: `seconds` after `warmup` seconds untimed (as the HTTP rows are),
    with where the cores went over it read by `watch` when one is given."""

    seconds: float
    warmup: float = 0.0
    watch: cpu_split.Watch | None = None


def _run_timed(
    result: RaceResult, timing: Timing, race: Callable[[float, float], Coroutine[Any, Any, None]]
) -> None:
    """Run `race(until, timed_from)` and record its timed phase in `result`: the seconds since
    the phase began (every answer it timed included) and, with a watch, the cores."""
    timed_from = time.perf_counter() + timing.warmup
    until = timed_from + timing.seconds
    window = timing.watch.between(timed_from, until) if timing.watch else None
    uvloop.run(race(until, timed_from))
    # Nothing timed (rate 0) if the race ended within its warm-up.
    result.seconds = max(0.0, time.perf_counter() - timed_from)
    result.cpu = window.split() if window else None


def _split(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# Flash sale


async def _place(
    base, tokens, product_id, result: RaceResult, *, until: float, sell_out: bool, timed_from=0.0
):
    async def one(slot: int) -> None:
        http = HttpConnection(*_split(base))
        headers = {"Authorization": f"Bearer {tokens[slot]}"}
        body = orders_bench.hot_order(product_id)
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                status, data = await http.request(
                    "POST",
                    "/api/v1/orders",
                    body,
                    {**headers, "Idempotency-Key": str(uuid.uuid4())},
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                result.error(type(exc).__name__)
                continue
            if status == 201:
                if started >= timed_from:
                    result.done += 1
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)
            elif sell_out and status in (409, 422):
                # Sold out (or no store holds it any more): this patient stops trying.
                result.checks["refused"] = result.checks.get("refused", 0) + 1
                break
            else:
                code = json.loads(data).get("error", {}).get("code") if data else ""
                result.error(f"HTTP {status} {code}")
        http.close()

    await asyncio.gather(*(one(slot) for slot in range(len(tokens))))


def flash_sale(base: str, *, connections: int, sell_out_units: int, timing: Timing) -> RaceResult:
    """Place orders for one hot product from `connections` patients over `timing`'s phase;
    then sell out exactly."""
    world = orders_bench.setup(connections, units=1_000_000, lots=3)
    tokens = orders_bench.patient_tokens(world)
    try:
        result = RaceResult()
        _run_timed(
            result,
            timing,
            lambda until, timed_from: _place(
                base,
                tokens,
                world["product_id"],
                result,
                until=until,
                sell_out=False,
                timed_from=timed_from,
            ),
        )
        # The sell-out: exactly sell_out_units left, every patient orders until refused.
        orders_bench.set_stock(world["store_id"], sell_out_units)
        before = orders_bench.check_stock(world["store_id"])["reserved"]
        sell_out = RaceResult()
        uvloop.run(
            _place(base, tokens, world["product_id"], sell_out, until=float("inf"), sell_out=True)
        )
        stock = orders_bench.check_stock(world["store_id"])
        result.checks = {
            "oversold_units": stock["oversold_units"],
            "reserved_without_order": stock["reserved_without_order"],
            "sell_out_units": sell_out_units,
            "sold_in_sell_out": stock["reserved"] - before,
            "placed_in_sell_out": sell_out.done,
        }
        for k, v in sell_out.errors.items():
            result.errors[f"sell-out {k}"] = v
        return result
    finally:
        orders_bench.cleanup()


# ---------------------------------------------------------------------------------------------
# Courier rush


async def _claim(
    base,
    couriers,
    result: RaceResult,
    claimed: list[str],
    emptied: list[bool],
    *,
    until: float,
    timed_from=0.0,
):
    async def one(token: str, lat: float, lon: float) -> None:
        http = HttpConnection(*_split(base))
        headers = {"Authorization": f"Bearer {token}"}
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                status, data = await http.request(
                    "POST", "/api/v1/dispatch/claim", {"lat": lat, "lon": lon}, headers
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                result.error(type(exc).__name__)
                continue
            if status == 200:
                if started >= timed_from:
                    result.done += 1
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)
                # Every job answered counts in the checks, the warm-up's too.
                claimed.append(json.loads(data)["id"])
            elif status == 204:
                # The pool is empty: the courier stops, and the rest of the rate is measured on a
                # board running dry. Counted in the rush's checks: a pool too small for the run.
                emptied.append(True)
                break
            else:
                code = json.loads(data).get("error", {}).get("code") if data else ""
                result.error(f"HTTP {status} {code}")
        http.close()

    await asyncio.gather(*(one(*c) for c in couriers))


def _deliver_held(stop: threading.Event) -> None:
    """Close the rush's claimed jobs every 50 ms (not timed), so couriers can claim again: each
    may hold only a few at once (the settings' bound)."""
    while not stop.wait(0.05):
        with contextlib.suppress(DBAPIError), session_scope() as s:
            # Never queue behind a claim in flight: its jobs are closed on the next round.
            s.execute(text("SET LOCAL lock_timeout = '1s'"))
            s.execute(
                text(
                    "UPDATE dispatch_jobs SET status = 'delivered', closed_at = now() "
                    "WHERE status = 'claimed' AND store_id IN "
                    f"(SELECT id FROM stores WHERE address = '{dispatch_bench.TAG}')"
                )
            )


def courier_rush(base: str, *, couriers: int, jobs: int, timing: Timing) -> RaceResult:
    """`couriers` couriers claim from a pool of open jobs at once, each claiming again at once,
    over `timing`'s phase."""
    ids = dispatch_bench.seed_rush(couriers, jobs)
    site = dispatch_bench.SITE
    plan = [
        (
            create_access_token(str(cid), role="courier", minutes=60),
            site[0] + ((k * 37) % 300 - 150) / 10_000,
            site[1] + ((k * 91) % 300 - 150) / 10_000,
        )
        for k, cid in enumerate(ids)
    ]
    stop = threading.Event()
    sweeper = threading.Thread(target=_deliver_held, args=(stop,), daemon=True)
    try:
        result, claimed, emptied = RaceResult(), [], []
        sweeper.start()
        _run_timed(
            result,
            timing,
            lambda until, timed_from: _claim(
                base, plan, result, claimed, emptied, until=until, timed_from=timed_from
            ),
        )
        stop.set()
        sweeper.join()
        with session_scope() as s:
            held = s.execute(
                text(
                    "SELECT count(*), count(DISTINCT j.id) FILTER (WHERE j.courier_id IS NOT NULL) "
                    "FROM dispatch_jobs j JOIN stores st ON st.id = j.store_id "
                    f"WHERE st.address = '{dispatch_bench.TAG}'"
                )
            ).one()
        result.checks = {
            "claims_answered": len(claimed),
            "jobs_answered_twice": len(claimed) - len(set(claimed)),
            "jobs_claimed_in_db": held[1],
            "answered_but_not_held": len(set(claimed)) - held[1],
            "couriers_finding_the_pool_empty": len(emptied),
        }
        return result
    finally:
        dispatch_bench.cleanup()
