"""Community pickup points (a leader's shop or a building lobby): where they stand, which store
serves them, who hands parcels over, what the leader earns, and when the store's runs leave.

A run leaves the store at one of the point's run times (the store's local clock) and reaches the
point `run_travel_minutes` later; an order placed at least `RUN_CUTOFF_EXTRA_MINUTES` plus the
store's preparation time before a departure travels in that run. `next_run` is pure.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from geoalchemy2 import Geography
from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from o2o import clock
from o2o.config import get_settings
from o2o.db import Base
from o2o.errors import InvalidInput, NotFound
from o2o.geo import point_element, point_wkt, to_latlon
from o2o.users.models import Role, User
from stores import eta, hours, proximity
from stores.models import Store

# Runs leave at these local times unless the point says otherwise: morning, afternoon, evening.
DEFAULT_RUN_TIMES = ("10:00", "15:00", "19:00")
# Besides the store's preparation time, the minutes a parcel needs to be packed into a run.
RUN_CUTOFF_EXTRA_MINUTES = 30
# How far ahead the schedule is searched for the next run (a week covers any weekly pattern).
SCHEDULE_DAYS = 8
# Who may stand behind a point's counter: a community leader, or a pharmacist of a partner shop.
LEADER_ROLES = (Role.LEADER, Role.PHARMACIST)


class PickupPoint(Base):
    __tablename__ = "pickup_points"
    __table_args__ = (
        CheckConstraint("commission_rate_bp BETWEEN 0 AND 10000", name="commission_rate_bp_range"),
        CheckConstraint("run_travel_minutes BETWEEN 0 AND 600", name="run_travel_minutes_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500))
    location = mapped_column(Geography("POINT", srid=4326, spatial_index=True), nullable=False)
    # The point's own hours, in the store's zone (same shape as a store's); null = always open.
    opening_hours: Mapped[list | None] = mapped_column(JSONB)
    leader_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The leader's share of an order's goods value, in basis points (1000 = 10%).
    commission_rate_bp: Mapped[int]
    # Departure times of the store's runs to this point, "HH:MM" in the store's local time.
    run_times: Mapped[list] = mapped_column(JSONB)
    run_travel_minutes: Mapped[int]
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


@dataclass(frozen=True)
class RunSlot:
    departs_at: datetime
    arrives_at: datetime


def _hhmm(value: str) -> time:
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


def next_run(
    run_times: list[str] | tuple[str, ...],
    zone: str,
    *,
    now: datetime,
    cutoff_minutes: int,
    travel_minutes: int,
) -> RunSlot:
    """Return the first run (UTC) that leaves at least `cutoff_minutes` after `now`."""
    tz = ZoneInfo(zone)
    first_day: date = clock.today(zone, at=now)
    ready_by = now + timedelta(minutes=cutoff_minutes)
    times = sorted({_hhmm(t) for t in run_times})
    for offset in range(SCHEDULE_DAYS):
        day = first_day + timedelta(days=offset)
        for at in times:
            departs = datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
            if departs >= ready_by:
                return RunSlot(departs, departs + timedelta(minutes=travel_minutes))
    raise ValueError("a pickup point needs at least one run time")


def run_for_new_order(session: Session, point: PickupPoint, *, now: datetime) -> RunSlot:
    """Return the run an order placed now at this point travels in."""
    store = session.get(Store, point.store_id)
    return next_run(
        point.run_times,
        store.timezone,
        now=now,
        cutoff_minutes=store.prep_minutes + RUN_CUTOFF_EXTRA_MINUTES,
        travel_minutes=point.run_travel_minutes,
    )


def point_not_found() -> NotFound:
    """The 404 for a point that does not exist or that the caller may not see."""
    return NotFound("No such pickup point.", code="pickup_point_not_found")


def get_point(session: Session, point_id: int, *, lock: bool = False) -> PickupPoint:
    """Load an active pickup point (404 otherwise)."""
    point = session.get(PickupPoint, point_id, with_for_update=lock)
    if point is None or not point.is_active:
        raise point_not_found()
    return point


def may_hand_over(user: User, point: PickupPoint) -> bool:
    """Say whether the user stands behind this point's counter (its leader, or an admin)."""
    return user.role is Role.ADMIN or (
        point.leader_user_id is not None and point.leader_user_id == user.id
    )


def create_point(
    session: Session,
    store: Store,
    *,
    name: str,
    address: str,
    lat: float,
    lon: float,
    opening_hours: list[dict] | None,
    leader_user_id: int | None,
    commission_rate_bp: int,
    run_times: list[str] | None,
) -> PickupPoint:
    """Register a pickup point served by the store's runs (flushes only)."""
    if leader_user_id is not None:
        leader = session.get(User, leader_user_id)
        if leader is None or leader.role not in LEADER_ROLES or not leader.is_active:
            raise InvalidInput(
                "The leader must be an active user with the role leader or pharmacist.",
                code="invalid_leader",
                details={"leader_user_id": leader_user_id},
            )
    if opening_hours is not None:
        hours.parse_hours(opening_hours)  # validated at the edge; refuse a bad caller here too
    distance_m = session.scalar(
        select(func.ST_Distance(Store.location, func.ST_GeogFromText(point_wkt(lat, lon)))).where(
            Store.id == store.id
        )
    )
    if distance_m > get_settings().dispatch_radius_m:
        raise InvalidInput(
            "The pickup point is too far from the store for its runs.",
            code="pickup_point_too_far",
            details={
                "distance_m": round(float(distance_m)),
                "max_m": get_settings().dispatch_radius_m,
            },
        )
    travel = eta.travel_minutes(float(distance_m), store.detour_factor, store.courier_speed_kmh)
    point = PickupPoint(
        store_id=store.id,
        name=name,
        address=address,
        location=point_element(lat, lon),
        opening_hours=opening_hours,
        leader_user_id=leader_user_id,
        commission_rate_bp=commission_rate_bp,
        run_times=list(run_times or DEFAULT_RUN_TIMES),
        run_travel_minutes=max(1, round(travel)),
    )
    session.add(point)
    session.flush()
    return point


def point_out(session: Session, point: PickupPoint, *, now: datetime | None = None) -> dict:
    """Describe a point as the apps see it, with its next run."""
    store = session.get(Store, point.store_id)
    slot = run_for_new_order(session, point, now=now or clock.now())
    return {
        "id": point.id,
        "store": {"id": store.id, "name": store.name},
        "name": point.name,
        "address": point.address,
        "location": to_latlon(point.location),
        "timezone": store.timezone,
        "opening_hours": point.opening_hours,
        "leader_user_id": point.leader_user_id,
        "commission_rate_bp": point.commission_rate_bp,
        "run_times": point.run_times,
        "run_travel_minutes": point.run_travel_minutes,
        "next_run": {"departs_at": slot.departs_at, "arrives_at": slot.arrives_at},
    }


def nearby_points(
    session: Session, *, lat: float, lon: float, radius_m: float | None, limit: int
) -> list[dict]:
    """List active pickup points of active stores within radius_m, nearest first."""
    proximity.check_point(lat, lon, "location")
    radius = proximity.search_radius(radius_m)
    proximity.check_limit(limit)
    here = func.ST_GeogFromText(point_wkt(lat, lon))
    distance = func.ST_Distance(PickupPoint.location, here)
    # ST_DWithin on the indexed column finds candidates; the order is the spheroid distance.
    rows = session.execute(
        select(PickupPoint, distance.label("distance_m"))
        .join(Store, Store.id == PickupPoint.store_id)
        .where(
            PickupPoint.is_active,
            Store.is_active,
            func.ST_DWithin(PickupPoint.location, here, radius),
        )
        .order_by(distance, PickupPoint.id)
        .limit(limit)
    ).all()
    now = clock.now()
    return [
        {"pickup_point": point_out(session, point, now=now), "distance_m": float(distance_m)}
        for point, distance_m in rows
    ]


def local_midnight(day: date, zone: str) -> datetime:
    """Return the instant the local day starts in `zone`."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone))
