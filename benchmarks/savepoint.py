"""The price of the savepoint around a nearest-first walk inside a transaction
(`stores.proximity.walk`).

A walk inside a transaction runs in a savepoint so that PostgreSQL's rare refusal of a misordered
index scan can be answered by a scan and a sort instead of an error (see `stores/proximity.py`;
a walk that opens its transaction needs none). This times the nearby list's walk from random
points of the benchmark city both ways, alternating, each in its own committed transaction as a
request makes it: in a savepoint (SAVEPOINT, the walk, RELEASE) and as the bare statement. Prints p50/p99 of both and their ratio.

Run: `bash scripts/bench.sh savepoint` (the search benchmark's city, database `o2o_bench`).
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from benchmarks.search import City, _meta, percentile, query_points
from o2o.config import get_settings
from stores import proximity
from stores.nearby import _NEARBY_SQL

DOCS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def _params(lat: float, lon: float) -> dict:
    radius = get_settings().search_max_radius_m
    return {
        "lat": lat,
        "lon": lon,
        "radius_m": radius,
        "cutoff_m": proximity.sphere_cutoff(radius),
        "after_distance": -1.0,
        "after_id": 0,
        "want": 2 * 21 + 2,
    }


def measure(session: Session, points: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Time each point's walk with and without the savepoint; return the times in ms."""
    times: dict[str, list[float]] = {"savepoint": [], "bare": []}
    for i, (lat, lon) in enumerate(points):
        params = _params(lat, lon)
        # Alternate which runs first, so neither always finds the pages the other just read.
        order = ("savepoint", "bare") if i % 2 else ("bare", "savepoint")
        for way in order:
            t0 = time.perf_counter()
            if way == "savepoint":
                # What `proximity.walk` does inside a transaction (search; a nearby list opening
                # its transaction walks bare).
                with session.begin_nested():
                    rows = session.execute(_NEARBY_SQL, params).all()
            else:
                rows = session.execute(_NEARBY_SQL, params).all()
            session.commit()
            times[way].append((time.perf_counter() - t0) * 1000)
            assert rows, "a walk from inside the city finds stores"
    return times


def report(times: dict[str, list[float]]) -> str:
    with_sp, bare = times["savepoint"], times["bare"]
    p50 = percentile(with_sp, 50) / percentile(bare, 50)
    p99 = percentile(with_sp, 99) / percentile(bare, 99)
    return "\n".join(
        [
            "| walk | runs | p50 ms | p99 ms |",
            "|---|---|---|---|",
            f"| in a savepoint (as `proximity.walk` in a transaction) | {len(with_sp)} | "
            f"{percentile(with_sp, 50):.2f} | {percentile(with_sp, 99):.2f} |",
            f"| bare statement | {len(bare)} | {percentile(bare, 50):.2f} | "
            f"{percentile(bare, 99):.2f} |",
            "",
            f"Savepoint / bare: {p50:.2f} at p50, {p99:.2f} at p99 (two more round trips per "
            "walk: SAVEPOINT and RELEASE).",
            "",
            f"Machine: {os.cpu_count()} cores, load average after the run "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg())
            + ".",
        ]
    )


def write_docs(body: str) -> None:
    section = (
        "## Savepoint around the nearest-first walk\n\n" + __doc__.split("\n\n")[1] + "\n\n"
        "Command: `bash scripts/bench.sh savepoint` (`O2O_BENCH_WRITE_DOCS=1` rewrites this "
        "section).\n\n" + body + "\n"
    )
    text = DOCS.read_text()
    start = text.find("\n## Savepoint around")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end + 1 :] if end != -1 else "")
    DOCS.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=500)
    args = parser.parse_args()
    engine = create_engine(get_settings().database_url, pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        if _meta(conn) is None:
            print("The benchmark city is missing: run `bash scripts/bench.sh search`.")
            return 3
    points = query_points(City(), args.points, random.Random(23))
    with Session(engine) as session:
        measure(session, points[:20])  # warm-up: caches and prepared statements
        times = measure(session, points)
    engine.dispose()
    body = report(times)
    print(body)
    if os.environ.get("O2O_BENCH_WRITE_DOCS") == "1":
        write_docs(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
