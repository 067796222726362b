"""Couriers: their working profiles (home store, service area), their positions, the limit on
the jobs one courier may hold, and where a courier is asking from."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.models import ACTIVE_JOB_SQL, Courier
from o2o import clock, ratelimit
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput, NotFound
from o2o.geo import GeometryError, area_element, area_geojson, parse_area, point_wkt, to_latlon
from o2o.i18n import gettext as _
from o2o.users.models import Role, User
from stores import statements
from stores.models import Store
from stores.statements import Step, Steps


def get_courier(session: Session, user_id: int) -> Courier | None:
    """Return a courier's working profile, or None when none is set yet."""
    return session.get(Courier, user_id)


def _courier_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.role is not Role.COURIER:
        raise NotFound(_("No such courier."), code="courier_not_found")
    return user


def set_courier_area(
    session: Session,
    user_id: int,
    *,
    home_store_id: int | None,
    service_area: dict[str, Any] | None,
) -> Courier:
    """Set where a courier works: a home store, a service area, or both (admin)."""
    _courier_user(session, user_id)
    if home_store_id is not None and session.get(Store, home_store_id) is None:
        raise InvalidInput(
            _("No store has this id."),
            code="unknown_store",
            details={"home_store_id": home_store_id},
        )
    area = None
    if service_area is not None:
        try:
            area = area_element(parse_area(service_area))
        except GeometryError as exc:
            raise InvalidInput(str(exc), code="invalid_area") from None
    stmt = pg_insert(Courier).values(
        user_id=user_id, home_store_id=home_store_id, service_area=area
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Courier.user_id],
        set_={"home_store_id": home_store_id, "service_area": area, "updated_at": func.now()},
    )
    session.execute(stmt)
    return session.get(Courier, user_id, populate_existing=True)


def courier_profile(session: Session, user_id: int) -> dict[str, Any]:
    """Describe a courier's working profile (admin)."""
    _courier_user(session, user_id)
    courier = session.get(Courier, user_id)
    return {
        "user_id": user_id,
        "home_store_id": courier.home_store_id if courier else None,
        "service_area": area_geojson(courier.service_area) if courier else None,
        "location": to_latlon(courier.location) if courier else None,
        "location_at": courier.location_at if courier else None,
        "active_jobs": active_job_count(session, user_id),
    }


# ---------------------------------------------------------------------------------------------
# Positions


# A position a courier reports: their profile row written (created if they have none yet) and the
# position read back, in one statement.
_REPORT_LOCATION_SQL = text(
    """
    INSERT INTO couriers AS c (user_id, location, location_at)
    VALUES (:user_id, ST_GeogFromText(:point), :now)
    ON CONFLICT (user_id) DO UPDATE
        SET location = excluded.location, location_at = excluded.location_at, updated_at = now()
    RETURNING ST_Y(c.location::geometry) AS lat, ST_X(c.location::geometry) AS lon,
              c.location_at AS at
    """
)


async def count_location_report(courier_id: int) -> None:
    """Count a courier's position report in its window (awaited: one Redis round trip); 429 when
    the courier already sent one accepted in the window."""
    await ratelimit.hit_async(
        ratelimit.limit(get_settings().courier_location_rate_limit),
        "courier-location",
        str(courier_id),
        message=_("Location updates are arriving too fast; send the next one a little later."),
    )


def report_location_plan(courier_id: int, lat: float, lon: float, now: datetime) -> Steps[dict]:
    """Record a position the courier reports, as a plan of one statement (`stores.statements`):
    returns {"lat", "lon", "at"} as stored. The window is counted first
    (`count_location_report`)."""
    (row,) = yield Step(
        _REPORT_LOCATION_SQL, {"user_id": courier_id, "point": point_wkt(lat, lon), "now": now}
    )
    return {"lat": row.lat, "lon": row.lon, "at": row.at}


def record_position(
    session: Session, user_id: int, lat: float, lon: float, *, now: datetime | None = None
) -> Courier:
    """Record a position from a trusted feed (no rate limit): fleet trackers, the simulation.
    Returns the profile as stored (a copy the session held is read again)."""
    upsert_location(session, user_id, lat, lon, now or clock.now())
    return session.get(Courier, user_id, populate_existing=True)


def record_positions(
    session: Session, positions: list[tuple[int, float, float]], *, now: datetime
) -> None:
    """Record many couriers' positions from a trusted feed in one statement (user, lat, lon)."""
    if not positions:
        return
    session.execute(
        text(
            """
            UPDATE couriers c SET location = ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
                   location_at = :now
            FROM unnest(CAST(:ids AS bigint[]), CAST(:lats AS float8[]), CAST(:lons AS float8[]))
                AS p(user_id, lat, lon)
            WHERE c.user_id = p.user_id
            """
        ),
        {
            "ids": [p[0] for p in positions],
            "lats": [p[1] for p in positions],
            "lons": [p[2] for p in positions],
            "now": now,
        },
    )


def set_shift_end(session: Session, courier: User, ends_at: datetime | None) -> Courier:
    """Record when the courier's shift ends (None: no end given); 422 if it is in the past."""
    if ends_at is not None and ends_at.tzinfo is None:
        raise InvalidInput(_("Give the shift's end with a UTC offset."), code="invalid_shift_end")
    if ends_at is not None and ends_at < clock.now():
        raise InvalidInput(_("The shift's end is in the past."), code="invalid_shift_end")
    profile = configured_courier(session, courier.id, lock=True)
    profile.shift_ends_at = ends_at
    session.flush()
    return profile


def upsert_location(session: Session, user_id: int, lat: float, lon: float, now: datetime) -> None:
    """Write a courier's position (creating the profile row if there is none yet): the position
    report's one statement, on a session."""
    statements.run(session, report_location_plan(user_id, lat, lon, now))


@dataclass(frozen=True)
class Where:
    """Where a courier is asking from, with the radii that apply."""

    lat: float
    lon: float

    @property
    def wkt(self) -> str:
        return point_wkt(self.lat, self.lon)


def where_from(session: Session, courier_id: int, lat: float | None, lon: float | None) -> Where:
    """Return the position sent, or else the courier's last known one (422 when neither)."""
    if lat is not None and lon is not None:
        return Where(lat, lon)
    if (lat is None) != (lon is None):
        raise InvalidInput(_("Send both lat and lon, or neither."), code="location_required")
    courier = session.get(Courier, courier_id)
    last = to_latlon(courier.location) if courier is not None else None
    if last is None:
        raise InvalidInput(
            _("Send your position (lat, lon): none is known yet."), code="location_required"
        )
    return Where(last["lat"], last["lon"])


# ---------------------------------------------------------------------------------------------
# Readiness to claim


# The jobs a courier holds, counted: on its own, and inside the next-job claim's statement
# (`dispatch.pool._claim_sql`), which counts them after the courier's lock, as `check_capacity`
# does in a claim of a chosen job.
ACTIVE_COUNT_SQL = (
    "SELECT count(*) AS jobs FROM dispatch_jobs"
    f" WHERE courier_id = :courier_id AND {ACTIVE_JOB_SQL}"
)
_ACTIVE_COUNT_SQL = text(ACTIVE_COUNT_SQL)


def active_job_count(session: Session, courier_id: int) -> int:
    """Count the jobs a courier has claimed or picked up and not yet closed."""
    return session.scalar(_ACTIVE_COUNT_SQL, {"courier_id": courier_id})


def configured_courier(session: Session, user_id: int, *, lock: bool = False) -> Courier:
    """Load the courier's profile, refusing one with neither home store nor service area.

    With lock=True the row is locked FOR UPDATE: one claim at a time per courier, so the limit
    on active jobs holds under concurrent claims.
    """
    stmt = select(Courier).where(Courier.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    courier = session.scalar(stmt)
    if courier is None or (courier.home_store_id is None and courier.service_area is None):
        raise not_configured()
    return courier


# Plain SQL on the hot path of a courier rush (no ORM statement to build for each claim).
_HOLD_SQL = text(
    """
    UPDATE couriers SET location = ST_GeogFromText(:point), location_at = :now, updated_at = now()
    WHERE user_id = :courier_id
    RETURNING home_store_id IS NOT NULL OR service_area IS NOT NULL
    """
)


def hold_for_claim_plan(courier_id: int, lat: float, lon: float, now: datetime) -> Steps[None]:
    """Lock the courier's profile for a claim and record where they ask from (one statement),
    then refuse a courier with neither home store nor service area. The jobs they hold are
    counted after this lock, by the claim's own statement (`dispatch.pool.claim_plan`), so
    concurrent claims of one courier see each other.

    A plan of statements (`stores.statements`), run in the claim's transaction on a session or on
    the driver's connection.
    """
    rows = yield Step(
        _HOLD_SQL, {"courier_id": courier_id, "point": point_wkt(lat, lon), "now": now}
    )
    if not rows or not rows[0][0]:
        raise not_configured()


def not_configured() -> Conflict:
    return Conflict(
        _("You have no home store or service area yet; ask an administrator to set one."),
        code="courier_not_configured",
    )


def check_capacity(session: Session, courier_id: int) -> None:
    """Refuse another claim to a courier who already holds the most active jobs allowed."""
    refuse_when_full(active_job_count(session, courier_id))


def refuse_when_full(active_jobs: int) -> None:
    """Refuse another claim to a courier who holds `active_jobs`, the most allowed or more."""
    limit = get_settings().dispatch_max_active_jobs
    if active_jobs >= limit:
        raise too_many_jobs(limit)


def too_many_jobs(limit: int) -> Conflict:
    return Conflict(
        _("You already hold {limit} active job(s); deliver or release one first.").format(
            limit=limit
        ),
        code="too_many_jobs",
        details={"max_active_jobs": limit},
    )
