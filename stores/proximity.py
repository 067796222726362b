"""Stores nearest first: what search and the nearby list share.

Both walk the GiST index in `<->` order, the distance on the mean sphere, and answer in the exact
spheroid distance (`ST_Distance` on geography). SPHEROID_BOUND links the two: a store at sphere
distance d is at least d x (1 - SPHEROID_BOUND) away on the spheroid, which proves when a list
is final and how far past the radius the sphere stream must run.
"""

import contextlib
import functools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from o2o.config import get_settings
from o2o.errors import InvalidInput
from o2o.i18n import gettext as _

MAX_LIMIT = 100
# The smallest search radius: a metre (the schema states it, so no sub-metre value reaches SQL).
MIN_RADIUS_M = 1.0

# On WGS84 a geodesic is between 0.56% shorter and 0.45% longer than the great circle on the
# mean sphere that `<->` measures (meridian and prime-vertical radii of curvature against the
# mean radius); 0.6% bounds both with room for rounding.
SPHEROID_BOUND = 0.006

# The point searched from, as a bound parameter: the index sees a constant and `location` is used
# exactly as indexed, never cast.
POINT_SQL = "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography"


def check_point(lat: float, lon: float, what: str) -> None:
    """Refuse a point off the globe with 422 invalid_location, naming it `what`."""
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidInput(
            _("The {what} must have lat in [-90, 90] and lon in [-180, 180].").format(what=what),
            code="invalid_location",
            details={"lat": lat, "lon": lon},
        )


def check_limit(limit: int) -> None:
    """Refuse a result count outside 1..MAX_LIMIT with 422 invalid_limit."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            _("limit must be from 1 to {MAX_LIMIT}.").format(MAX_LIMIT=MAX_LIMIT),
            code="invalid_limit",
        )


def search_radius(radius_m: float | None) -> float:
    """Return the radius to search (the maximum when None); 422 invalid_radius beyond it."""
    max_radius = get_settings().search_max_radius_m
    if radius_m is None:
        return max_radius
    if not (math.isfinite(radius_m) and MIN_RADIUS_M <= radius_m <= max_radius):
        raise InvalidInput(
            _("The search radius must be from {MIN_RADIUS_M:g} to {max_radius:g} m.").format(
                MIN_RADIUS_M=MIN_RADIUS_M, max_radius=max_radius
            ),
            code="invalid_radius",
            details={"radius_m": radius_m, "max_radius_m": max_radius},
        )
    return radius_m


def sphere_cutoff(radius_m: float) -> float:
    """Return the sphere distance beyond which no store can be within radius_m on the spheroid."""
    return radius_m / (1 - SPHEROID_BOUND)


def sort_key(row: Row) -> tuple[float, int]:
    """Order stores by spheroid distance, then id (the order every answer is given in)."""
    return (row.distance_m, row.store_id)


def proven(best: Sequence[Row], k: int, unseen_sphere_m: float) -> bool:
    """Whether no store beyond a sphere distance can beat the k-th best spheroid distance."""
    return len(best) >= k and best[k - 1].distance_m < unseen_sphere_m * (1 - SPHEROID_BOUND)


# PostGIS' geography index can report a store that (nearly) coincides with the searched point
# as farther than it is, and PostgreSQL then refuses the ordered scan ("index returned tuples in
# wrong order"). Fuzzing found such pairs on a pole and the antimeridian written two ways, a
# float's width off them, and at tiny coordinates near (0, 0): no cheap test tells them all
# apart, so a walk inside a session's transaction runs in a savepoint (two short statements),
# and a refused walk runs again without the index's ordering: a scan and a sort, exact, rare. (On
# the driver, in autocommit, a refused walk has nothing to undo: see `walk_async`.)
#
# Work that can simply run again (placing an order) spares its walks the savepoint: inside
# `redone_on_refusal`, a refused walk raises WalkRefused, the refusal having aborted the
# transaction (or the caller's own savepoint), and the caller rolls back and runs the work again
# with each walk guarded.
_MISORDERED = "index returned tuples in wrong order"
# The walk again without the index's ordering (the ORM's and the driver's alike), for the rest of
# the transaction's walk only. Planned anew: a statement the driver prepared may hold a generic
# plan (the hot reads' connections always do, `o2o.db.DRIVER_CONNECTION`), which no setting
# changes, so the plan cache is told to plan this run for itself.
_INDEX_SCANS_OFF = (
    "SELECT set_config('enable_indexscan', 'off', true) AS index_scans,"
    " set_config('plan_cache_mode', 'force_custom_plan', true) AS plans"
)
_INDEX_SCANS_ON = (
    "SELECT set_config('enable_indexscan', 'on', true) AS index_scans, set_config('plan_cache_mode',"
    " (SELECT reset_val FROM pg_settings WHERE name = 'plan_cache_mode'), true) AS plans"
)


_UNGUARDED = "o2o_walks_unguarded"


class WalkRefused(Exception):
    """The index refused a walk that ran without a savepoint (`redone_on_refusal`): the
    transaction (or the caller's savepoint) is aborted, to be rolled back and its work run
    again."""


@contextlib.contextmanager
def redone_on_refusal(session: Session) -> Iterator[None]:
    """Run the session's walks in the block without savepoints: a refused one raises
    WalkRefused, for a caller that then rolls back and runs the block's work again outside it."""
    outer = session.info.get(_UNGUARDED, False)
    session.info[_UNGUARDED] = True
    try:
        yield
    finally:
        session.info[_UNGUARDED] = outer


def walk(session: Session, statement: TextClause, params: dict) -> list[Row]:
    """Run a nearest-first walk from (params["lat"], params["lon"]) and return its rows."""
    opens = not session.in_transaction()
    if opens or session.info.get(_UNGUARDED):
        # Bare. A walk that opens the request's transaction (the nearby list), refused, rolls
        # back a transaction that holds nothing else and walks again; an unguarded one refused
        # inside a transaction tells its caller, who redoes the work (`redone_on_refusal`).
        try:
            return list(session.execute(statement, params).all())
        except DBAPIError as exc:
            if _MISORDERED not in str(exc.orig):
                raise
            if not opens:
                raise WalkRefused from exc
        session.rollback()
        return _walk_unordered(session, statement, params)
    try:
        with session.begin_nested():
            return list(session.execute(statement, params).all())
    except DBAPIError as exc:
        if _MISORDERED not in str(exc.orig):
            raise
    with session.begin_nested():
        return _walk_unordered(session, statement, params)


async def walk_async(conn: AsyncConnection, statement: str, params: dict) -> list[Any]:
    """`walk` on the driver's async connection (psycopg, autocommit: see `o2o.db`); rows are
    named tuples. Refused by the index's ordering, the walk runs again without it, in a
    transaction of its own that the settings do not outlive."""
    try:
        async with conn.cursor(row_factory=namedtuple_row) as cur:
            await cur.execute(statement, params)
            return await cur.fetchall()
    except psycopg.Error as exc:
        if _MISORDERED not in str(exc):
            raise
    await conn.rollback()  # a no-op in autocommit; a test's stand-in returns to its savepoint
    async with conn.transaction(), conn.cursor(row_factory=namedtuple_row) as cur:
        await cur.execute(_INDEX_SCANS_OFF)
        await cur.execute(statement, params)
        return await cur.fetchall()


@functools.lru_cache(maxsize=1024)
def driver_sql(statement: TextClause) -> str:
    """A statement written for SQLAlchemy (`:name`), rewritten for psycopg (`%(name)s`).
    PostgreSQL's casts (`::text`) and the colons of a literal time (`'00:00:00+00'`) are left
    alone, and a literal `%` is doubled."""
    # SQLAlchemy's own rule for a bind in text(): not after a colon, a word character or a
    # backslash, and not before a colon.
    return re.sub(r"(?<![:\w\\]):(\w+)(?!:)", r"%(\1)s", str(statement).replace("%", "%%"))


def _walk_unordered(session: Session, statement: TextClause, params: dict) -> list[Row]:
    session.execute(text(_INDEX_SCANS_OFF))
    rows = list(session.execute(statement, params).all())
    session.execute(text(_INDEX_SCANS_ON))
    return rows
