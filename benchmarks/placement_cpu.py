"""What one order placement costs the interpreter that serves it, next to the reference's request.

Under `make load`'s flash sale the machine's two cores are full (the servers' workers, PostgreSQL,
the client), so a placement's rate is set by its CPU time; one HTTP run's rate moves with the
machine by more than a change to the placement does. This measures the CPU time alone, in one
process, with no concurrency:

- `POST /api/v1/orders` through the application (its lifespan, middleware, dependencies and
  pools as served), each with a fresh Idempotency-Key, for one unit of one product at the one
  store (`benchmarks.orders.setup`), by patients taken in turn;
- the reference's request (`benchmarks.reference`: the nearby list's SQL on psycopg's async
  pool, no framework) through the same in-process transport (httpx's ASGI transport), the
  client's own CPU time being part of both.

The application is served as in production (its settings, its JSON lines), its lines written to
artifacts/placement_cpu-server.log.

Rounds alternate the two, so a change in the machine's speed weighs on both; each figure is the
median over the rounds of this process's CPU time per request, and the placement's is given as
a ratio to the reference's.

Run: `bash scripts/bench.sh placement_cpu` (options: `python -m benchmarks.placement_cpu --help`).
"""

import argparse
import asyncio
import json
import statistics
import uuid

from benchmarks import in_process, load
from benchmarks import orders as orders_bench

PATIENTS = 64


async def measure(world: dict, rounds: int, placements: int, references: int) -> dict:
    tokens = orders_bench.patient_tokens(world)
    lat, lon = orders_bench.SITE
    body = orders_bench.hot_order(world["product_id"])
    turn = iter(range(10**9))

    async with in_process.served("placement_cpu") as (client, ref, progress):

        async def place() -> None:
            headers = {
                "Authorization": f"Bearer {tokens[next(turn) % len(tokens)]}",
                "Idempotency-Key": str(uuid.uuid4()),
            }
            answer = await client.post("/api/v1/orders", json=body, headers=headers)
            if answer.status_code != 201:
                raise SystemExit(f"placement refused: {answer.status_code} {answer.text}")

        async def nearby() -> None:
            answer = await ref.get("/nearby", params={"lat": lat, "lon": lon})
            if answer.status_code != 200 or not answer.json():
                raise SystemExit(f"reference failed: {answer.status_code} {answer.text}")

        # Warm-up: statements prepared, caches filled, as after a server's first minutes.
        await in_process.cpu_ms(50, place)
        await in_process.cpu_ms(100, nearby)
        placement_ms, reference_ms = [], []
        for index in range(rounds):
            placement_ms.append(await in_process.cpu_ms(placements, place))
            reference_ms.append(await in_process.cpu_ms(references, nearby))
            print(
                f"round {index + 1}/{rounds}: placement {placement_ms[-1]:.2f} ms, "
                f"reference {reference_ms[-1]:.2f} ms of CPU a request",
                file=progress,
                flush=True,
            )
    placement, ref_ms = statistics.median(placement_ms), statistics.median(reference_ms)
    return {
        "rounds": rounds,
        "placements_per_round": placements,
        "reference_requests_per_round": references,
        "placement_cpu_ms": round(placement, 2),
        "reference_cpu_ms": round(ref_ms, 2),
        "placement_over_reference": round(placement / ref_ms, 2),
        "placement_cpu_ms_by_round": [round(v, 2) for v in placement_ms],
        "reference_cpu_ms_by_round": [round(v, 2) for v in reference_ms],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--placements", type=int, default=200, help="placements per round")
    parser.add_argument("--references", type=int, default=400, help="reference requests per round")
    args = parser.parse_args()
    # Stock for every placement, warm-up included (set up as development: its payment app).
    units = args.rounds * args.placements + 100
    world = orders_bench.setup(PATIENTS, units=units, lots=3)
    # Then served as production is, with `make load`'s raised limits and keys of this run's
    # own, which sign the tokens. Online payments are asked of the setup's payment app, as in
    # `make load`'s flash sale.
    in_process.serve_as_production(load.RAISED_LIMITS)
    try:
        result = asyncio.run(measure(world, args.rounds, args.placements, args.references))
    finally:
        orders_bench.cleanup()
    print(json.dumps(result, indent=2))
    print(
        f"placement_cpu: {result['placement_cpu_ms']} ms of CPU a placement, "
        f"{result['placement_over_reference']} times the reference's request "
        f"({result['reference_cpu_ms']} ms), median of {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
