"""The delivery ETA model: store preparation + courier to the store + store to the drop-off.

Travel takes distance x detour factor / courier speed, with every parameter per store (DESIGN.md,
Routing): the one formula of `stores.eta`, which search shows patients. Pure: no database. The
SLA monitor evaluates the same formula in SQL over every open delivery at once
(`dispatch/monitor.py`); a test checks that both agree.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from o2o.geo import METRES_PER_KM
from stores import eta as stores_eta

MINUTES_PER_HOUR = 60.0

# Minutes per straight-line metre in SQL, over a store row `s`: detour / (km/h -> m/min).
MINUTES_PER_METRE_SQL = "(s.detour_factor / (s.courier_speed_kmh * 1000.0 / 60.0))"


@dataclass(frozen=True)
class EtaModel:
    """One store's ETA parameters."""

    prep_minutes: float
    courier_speed_kmh: float
    detour_factor: float

    def __post_init__(self) -> None:
        if self.courier_speed_kmh <= 0:
            raise ValueError("courier speed must be positive")
        if self.detour_factor < 1:
            raise ValueError("the detour factor is at least 1 (roads are never shorter)")
        if self.prep_minutes < 0:
            raise ValueError("preparation time cannot be negative")

    @classmethod
    def for_store(cls, store) -> "EtaModel":
        """Read the parameters of a Store row (or anything with the same attributes)."""
        return cls(
            prep_minutes=float(store.prep_minutes),
            courier_speed_kmh=float(store.courier_speed_kmh),
            detour_factor=float(store.detour_factor),
        )

    @property
    def metres_per_minute(self) -> float:
        return self.courier_speed_kmh * METRES_PER_KM / MINUTES_PER_HOUR

    def travel_minutes(self, distance_m: float) -> float:
        """Minutes a courier needs for a straight-line distance (roads make it longer)."""
        return stores_eta.travel_minutes(distance_m, self.detour_factor, self.courier_speed_kmh)

    def delivery_minutes(
        self,
        store_to_dropoff_m: float,
        *,
        courier_to_store_m: float | None = None,
        courier_wait_minutes: float = 0.0,
    ) -> float:
        """Minutes from now to the door for an order not yet prepared.

        The phases add up: the courier is counted as setting off for the store after
        preparation (a job opens only a few minutes before the order is due ready, and the
        estimate leaves that overlap out, a few minutes cautious). Without a known courier,
        `courier_wait_minutes` stands for the time one needs to claim the job and arrive.
        """
        to_store = (
            self.travel_minutes(courier_to_store_m)
            if courier_to_store_m is not None
            else courier_wait_minutes
        )
        return self.prep_minutes + to_store + self.travel_minutes(store_to_dropoff_m)


def calibrated_speed_kmh(
    trips: Iterable[tuple[float, float]],
    *,
    detour_factor: float,
    prior_kmh: float,
    min_trips: int = 20,
) -> float:
    """Estimate a store's courier speed from delivered trips (straight-line metres, minutes).

    The median is robust to the odd courier who stopped for lunch; with too few trips the prior
    (the configured speed) stands.
    """
    speeds = [
        distance_m * detour_factor / METRES_PER_KM / (minutes / MINUTES_PER_HOUR)
        for distance_m, minutes in trips
        if minutes > 0 and distance_m > 0
    ]
    if len(speeds) < min_trips:
        return prior_kmh
    return statistics.median(speeds)
