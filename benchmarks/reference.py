"""The reference endpoint of `make load`: the nearby list's SQL and nothing else.

A bare ASGI app (no framework, no ORM, no middleware) that answers `GET /nearby?lat=&lon=` with
the rows of one walk of `stores.nearby`'s statement, run through psycopg's async pool and dumped
as JSON, on connections set as the platform's hot reads' are (`o2o.db.DRIVER_CONNECTION`).
Served by uvicorn with the platform's worker count beside the platform, it is the ceiling of this
stack on this machine: every figure of `make load` is a ratio to it.

Serve: `uvicorn benchmarks.reference:app --workers 4` with O2O_DATABASE_URL set.
"""

import json
import os
from urllib.parse import parse_qs

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from o2o.db import DRIVER_CONNECTION, psycopg_url
from stores.nearby import _NEARBY_SQL
from stores.proximity import driver_sql

# The platform's defaults for a first page: a 50 km radius, 20 stores, one walk of 2k + 2 rows.
RADIUS_M = 50_000.0
LIMIT = 20
WANT = 2 * (LIMIT + 1) + 2
CUTOFF_M = RADIUS_M / (1 - 0.006)

# The statement written for SQLAlchemy (`:name`), rewritten for psycopg (`%(name)s`).
SQL = driver_sql(_NEARBY_SQL)

_pool: AsyncConnectionPool | None = None


def _dsn() -> str:
    return psycopg_url(os.environ["O2O_DATABASE_URL"])


async def _rows(lat: float, lon: float) -> list[dict]:
    params = {
        "lat": lat,
        "lon": lon,
        "radius_m": RADIUS_M,
        "cutoff_m": CUTOFF_M,
        "after_distance": -1.0,
        "after_id": 0,
        "want": WANT,
    }
    async with _pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL, params)
        return [row for row in await cur.fetchall() if row["matched"]][:LIMIT]


async def _send(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    """Answer /nearby with the walk's rows; nothing else."""
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Connections set as the platform's driver pool's are (autocommit, generic plans).
                _pool = AsyncConnectionPool(
                    _dsn(), min_size=4, max_size=10, open=False, kwargs=DRIVER_CONNECTION
                )
                await _pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] != "/nearby":
        await _send(send, 404, b'{"error": "not found"}')
        return
    query = parse_qs(scope["query_string"].decode())
    rows = await _rows(float(query["lat"][0]), float(query["lon"][0]))
    items = [
        {
            "store": {"id": r["store_id"], "name": r["name"], "address": r["address"]},
            "location": {"lat": r["lat"], "lon": r["lon"]},
            "distance_m": r["distance_m"],
        }
        for r in rows
    ]
    await _send(send, 200, json.dumps({"items": items}).encode())
