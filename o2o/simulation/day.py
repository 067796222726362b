"""The day's plan: demand and fleet drawn once from a seed (no database), replayed by every policy."""

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from o2o import clock
from stores import demo as stores_demo

LOCAL = ZoneInfo(stores_demo.TIMEZONE)
DAY_STARTS_AT = 9  # local hour: most demo pharmacies are open from here ...


@dataclass(frozen=True)
class Options:
    seed: int = 7
    orders: int = 600
    couriers: int = 40
    hours: float = 12.0
    scenario: str = "default"
    starts_at_hour: int = DAY_STARTS_AT  # local
    evening_boost: float = 1.0  # x the demand from EVENING_FROM_HOUR (local)
    off_shift_share: float = 0.0  # couriers going off shift at off_shift_hour (local)
    off_shift_hour: float = 18.0
    rx_share: float = 0.2  # orders with a prescription medicine
    not_home_share: float = 0.01  # first delivery attempts that fail (nobody at the door)
    wrong_code_share: float = 0.02  # hand-overs where the first code typed is wrong
    doctors: int = 3


@dataclass(frozen=True)
class PlannedOrder:
    n: int
    at: datetime
    patient: int
    dropoff: tuple[float, float]
    items: tuple[tuple[str, int], ...]  # (GTIN, quantity)
    rx: bool
    staff_delay_min: float  # until a pharmacist starts preparing
    prep_factor: float  # x the store's preparation minutes
    rx_delays_min: tuple[float, float, float, float]  # request, doctor claim, sign, review
    ride_factor: float  # x the modelled ride to the door (traffic, stairs)
    not_home: bool
    wrong_code_first: bool


@dataclass(frozen=True)
class PlannedCourier:
    n: int
    home: tuple[float, float]  # the centre of their service area
    start: tuple[float, float]
    speed_factor: float  # x the store's modelled courier speed
    poll_offset_s: float  # when in each minute their app refreshes the job board
    off_at: datetime | None = None  # goes off shift (finishes the trip in hand, takes no more)


EVENING_FROM_HOUR = 17

# The presets of `--scenario`: an ordinary day; a busy one (lunch and the start of the evening
# peak, twice the orders an hour); and that busy day with an evening surge while a quarter of
# the couriers go off shift.
SCENARIOS = {
    "default": Options(),
    "peak": Options(orders=1200, couriers=40, hours=8, scenario="peak", starts_at_hour=11),
    "storm": Options(
        orders=1200,
        couriers=40,
        hours=8,
        scenario="storm",
        starts_at_hour=11,
        evening_boost=1.5,
        off_shift_share=0.25,
    ),
}


@dataclass(frozen=True)
class DayPlan:
    options: Options
    start: datetime
    end: datetime
    orders: tuple[PlannedOrder, ...]
    couriers: tuple[PlannedCourier, ...]


def day_start(today: date | None = None, *, hour: int = DAY_STARTS_AT) -> datetime:
    """The simulated day: the last weekday before today, from `hour` in the demo city."""
    day = (today or clock.today(LOCAL)) - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL).astimezone(UTC)


def demand_weight(local_hour: float, evening_boost: float = 1.0) -> float:
    """Relative order rate by local time: a lunchtime peak and a bigger evening one."""
    weight = (
        1.0
        + 0.7 * math.exp(-((local_hour - 12.5) ** 2) / 2.0)
        + 1.0 * math.exp(-((local_hour - 19.0) ** 2) / 2.5)
    )
    return weight * (evening_boost if local_hour >= EVENING_FROM_HOUR else 1.0)


def _order_count(options: Options, start: datetime) -> int:
    """The day's orders: as asked, plus the evening surge on top (the same day, busier)."""
    if options.evening_boost == 1.0:
        return options.orders
    local = start.astimezone(LOCAL)
    hours = [local.hour + local.minute / 60 + q / 4 for q in range(int(options.hours * 4))]
    plain = sum(demand_weight(h % 24) for h in hours)
    boosted = sum(demand_weight(h % 24, options.evening_boost) for h in hours)
    return round(options.orders * boosted / plain)


def _point_near(rng: random.Random, centre: tuple[float, float], radius_m: float):
    """A point uniformly distributed in a disc around centre."""
    distance = radius_m * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / stores_demo.METRES_PER_DEGREE
    dlon = (
        distance
        * math.sin(bearing)
        / (stores_demo.METRES_PER_DEGREE * math.cos(math.radians(centre[0])))
    )
    return round(centre[0] + dlat, 6), round(centre[1] + dlon, 6)


def plan_day(options: Options, *, start: datetime | None = None) -> DayPlan:
    """Draw the day's orders and couriers from the seed (no database)."""
    rng = random.Random(options.seed)
    start = start or day_start(hour=options.starts_at_hour)
    total = _order_count(options, start)
    end = start + timedelta(hours=options.hours)
    delivering = [s for s in stores_demo.STORES if s.zone_km]
    catalogue = stores_demo.demo_products()
    otc = [p.data.gtin for p in catalogue if not p.data.rx_only and not p.data.controlled]
    rx = [p.data.gtin for p in catalogue if p.data.rx_only and not p.data.controlled]
    patients = max(20, options.orders // 3)

    # Order times: rejection sampling against the demand curve.
    boost = options.evening_boost
    peak = max(demand_weight(h / 4, boost) for h in range(24 * 4))
    times = []
    while len(times) < total:
        at = start + timedelta(seconds=rng.uniform(0, options.hours * 3600))
        local = at.astimezone(LOCAL)
        if rng.random() * peak <= demand_weight(local.hour + local.minute / 60, boost):
            times.append(at)
    times.sort()

    orders = []
    for n, at in enumerate(times):
        store = rng.choice(delivering)
        # Inside the store's zone, mostly well inside: patients live around their pharmacy.
        dropoff = _point_near(rng, (store.lat, store.lon), store.zone_km * 1000 * 0.8)
        needs_rx = rng.random() < options.rx_share
        items = {rng.choice(rx): 1} if needs_rx else {}
        for gtin in rng.sample(otc, rng.choice((1, 1, 1, 2))):
            items[gtin] = 1
        orders.append(
            PlannedOrder(
                n=n,
                at=at,
                patient=rng.randrange(patients),
                dropoff=dropoff,
                items=tuple(sorted(items.items())),
                rx=needs_rx,
                staff_delay_min=rng.uniform(0.5, 4.0),
                prep_factor=rng.uniform(0.75, 1.3),
                rx_delays_min=(
                    rng.uniform(1, 4),
                    rng.uniform(2, 12),
                    rng.uniform(2, 6),
                    rng.uniform(2, 10),
                ),
                ride_factor=rng.uniform(0.9, 1.25),
                not_home=rng.random() < options.not_home_share,
                wrong_code_first=rng.random() < options.wrong_code_share,
            )
        )
    couriers = []
    local_start = start.astimezone(LOCAL)
    off_at = local_start.replace(
        hour=int(options.off_shift_hour), minute=round(options.off_shift_hour % 1 * 60)
    ).astimezone(UTC)
    off_every = round(1 / options.off_shift_share) if options.off_shift_share else 0
    for n in range(options.couriers):
        home = delivering[n % len(delivering)]
        couriers.append(
            PlannedCourier(
                n=n,
                home=(home.lat, home.lon),
                start=_point_near(rng, (home.lat, home.lon), 1500),
                speed_factor=rng.uniform(0.85, 1.15),
                poll_offset_s=rng.uniform(0, 60),
                off_at=off_at if off_every and n % off_every == off_every - 1 else None,
            )
        )
    return DayPlan(options, start, end, tuple(orders), tuple(couriers))
