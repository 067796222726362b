"""What the nearby list and search cost the interpreter that serves them, next to the reference's
request, on the demo city.

`make load` loads them over HTTP next to the reference (`benchmarks.reference`), and its targets
are rates relative to the reference's: with the machine's two cores shared by the servers'
workers, PostgreSQL and the client, a request's rate follows the CPU time it costs. One HTTP run
moves with the machine by more than a change to a request's Python does; this measures the CPU
time alone, in one process, with no concurrency:

- `GET /api/v1/stores/nearby` and `POST /api/v1/search/stores` through the application (its
  lifespan, middleware, dependencies and pools as served), the same requests `make load` sends
  on the demo city (`benchmarks.load`: points around its centre, carts of its products);
- the reference's request for the same points, through the same in-process transport (httpx's
  ASGI transport), the client's own CPU time being part of every figure.

The database is seeded with the demo city when it has no store. The application is served as in
production (its settings, its JSON lines), its lines written to artifacts/hot_read_cpu-server.log.

Within a round the three take turns, 20 requests at a time, so a change in the machine's speed
weighs on each alike; each figure is the median over the rounds of this process's CPU time per
request. That is all of the process's time, its pools' background tasks and the collector's
passes included: they fall on whichever request is running, so a request that runs longer
carries a little more of them. The reference's time over a request's is the share of the
reference's rate that request would reach if CPU time were all that set the rates
(PostgreSQL's share of the work, the same for the nearby list and the reference, is not in it).

Run: `bash scripts/bench.sh hot_read_cpu` (options: `python -m benchmarks.hot_read_cpu --help`).
"""

import argparse
import asyncio
import json
import os
import random
import statistics

from sqlalchemy import func, select

from benchmarks import in_process, load
from o2o.db import session_scope

KINDS = ("nearby", "search", "reference")
# Requests of one kind in a row, before the next kind's turn.
CHUNK = 20


def seed_demo_city() -> None:
    """The demo city, unless the database has stores already."""
    from o2o.demo import load_demo
    from stores.models import Store

    with session_scope() as session:
        if session.scalar(select(func.count()).select_from(Store)) == 0:
            load_demo(session)


async def measure(rounds: int, requests: int) -> dict:
    points = load.demo_points(200, random.Random(11))
    products = load.sellable_products(os.environ["O2O_DATABASE_URL"], 40)
    sent = {
        "nearby": load.nearby_requests(points),
        "search": load.search_requests(points, products, random.Random(5)),
        "reference": load.reference_requests(points),
    }
    async with in_process.served("hot_read_cpu") as (client, ref, progress):
        turns = dict.fromkeys(KINDS, 0)

        def sender(kind: str):
            to = ref if kind == "reference" else client

            async def one() -> None:
                method, path, body = sent[kind][turns[kind] % len(sent[kind])]
                turns[kind] += 1
                headers = {"content-type": "application/json"} if body else {}
                answer = await to.request(method, path, content=body, headers=headers)
                if answer.status_code != 200:
                    raise SystemExit(f"{kind} failed: {answer.status_code} {answer.text}")

            return one

        senders = {kind: sender(kind) for kind in KINDS}
        # Warm-up: statements prepared, caches filled, as after a server's first minutes.
        for kind in KINDS:
            await in_process.cpu_ms(100, senders[kind])
        by_round: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for index in range(rounds):
            # The kinds take turns a few requests at a time: the machine's speed, which moves
            # within a second, weighs on each alike.
            spent = dict.fromkeys(KINDS, 0.0)
            for _ in range(requests // CHUNK):
                for kind in KINDS:
                    spent[kind] += await in_process.cpu_ms(CHUNK, senders[kind]) * CHUNK
            for kind in KINDS:
                by_round[kind].append(spent[kind] / (requests // CHUNK * CHUNK))
            print(
                f"round {index + 1}/{rounds}: "
                + ", ".join(f"{kind} {by_round[kind][-1]:.3f} ms" for kind in KINDS)
                + " of CPU a request",
                file=progress,
                flush=True,
            )
    median = {kind: statistics.median(values) for kind, values in by_round.items()}
    return {
        "rounds": rounds,
        "requests_per_round": requests,
        **{f"{kind}_cpu_ms": round(median[kind], 3) for kind in KINDS},
        "reference_over_nearby": round(median["reference"] / median["nearby"], 3),
        "reference_over_search": round(median["reference"] / median["search"], 3),
        **{f"{kind}_cpu_ms_by_round": [round(v, 3) for v in by_round[kind]] for kind in KINDS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--requests",
        type=int,
        default=600,
        help=f"requests of each kind a round (a multiple of {CHUNK}, their turns' length)",
    )
    args = parser.parse_args()
    if args.requests < CHUNK or args.requests % CHUNK:
        parser.error(f"--requests must be a positive multiple of {CHUNK}")
    seed_demo_city()
    # Served as production is, with `make load`'s raised limits (searches are still counted in
    # Redis, the window raised for one address's thousands) and keys of this run's own.
    in_process.serve_as_production(load.RAISED_LIMITS)
    result = asyncio.run(measure(args.rounds, args.requests))
    print(json.dumps(result, indent=2))
    print(
        f"hot_read_cpu: nearby {result['nearby_cpu_ms']} ms, search {result['search_cpu_ms']} ms, "
        f"reference {result['reference_cpu_ms']} ms of CPU a request; the reference's over "
        f"nearby's {result['reference_over_nearby']}, over search's "
        f"{result['reference_over_search']}, median of {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
