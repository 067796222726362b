"""Work planned as statements, run by a session or by the driver's async connection.

A search is written as a generator that yields each statement (`Step`) and is sent its rows: the
planning does no I/O, so one plan runs on a session (checkout, the services, the benchmarks) and on
a connection of psycopg's async pool (the search endpoint, a hot read: no ORM work per statement,
no hand-over to sync code). Rows are read by attribute on both (SQLAlchemy's rows, psycopg's named
tuples). A plan that writes (a courier's claim, `dispatch.pool.claim_plan`) runs in its caller's
transaction: the session's, or one the caller opens on the driver's connection. A walk step may
not run in a transaction the caller opened on the driver: a walk the index refuses is run again
after a rollback, which such a transaction does not allow.
"""

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from sqlalchemy import TextClause
from sqlalchemy.orm import Session

from stores import proximity


@dataclass(frozen=True)
class Step:
    """One statement: a nearest-first walk (`proximity.walk`) or a plain read."""

    statement: TextClause
    params: dict[str, Any]
    walk: bool = False


T = TypeVar("T")
Steps = Generator[Step, Sequence[Any], T]

# Work a caller can simply run again (placing an order) runs its plans' walks on a session
# without the savepoint each would get inside a transaction: a walk the index refuses raises
# WalkRefused, and the caller rolls back and runs the work again outside the block
# (`stores.proximity`, where the walks are run).
redone_on_refusal = proximity.redone_on_refusal
WalkRefused = proximity.WalkRefused


def database(session: Session) -> str:
    """Name the session's database (the key of per-process caches of its statistics)."""
    url = session.get_bind().engine.url
    return f"{url.host}:{url.port or 5432}/{url.database}"


def driver_database(conn: AsyncConnection) -> str:
    """Name a driver connection's database, as `database` does."""
    return f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"


def run(session: Session, steps: Steps[T]) -> T:
    """Run a plan's statements on a session; return what the plan returns."""
    try:
        step = next(steps)
        while True:
            if step.walk:
                rows: Sequence[Any] = proximity.walk(session, step.statement, step.params)
            else:
                rows = session.execute(step.statement, step.params).all()
            step = steps.send(rows)
    except StopIteration as done:
        return done.value


async def run_async(conn: AsyncConnection, steps: Steps[T]) -> T:
    """Run a plan's statements on the driver's async connection (autocommit unless the caller
    opened a transaction: each statement then reads what was committed when it started; a walk
    the index refuses runs again, see `proximity.walk_async`)."""
    try:
        step = next(steps)
        while True:
            sql = proximity.driver_sql(step.statement)
            if step.walk:
                rows: Sequence[Any] = await proximity.walk_async(conn, sql, step.params)
            else:
                async with conn.cursor(row_factory=namedtuple_row) as cur:
                    await cur.execute(sql, step.params)
                    rows = await cur.fetchall()
            step = steps.send(rows)
    except StopIteration as done:
        return done.value
