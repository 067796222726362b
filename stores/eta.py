"""The ETA a search result shows: pure arithmetic over one store's parameters, no database.

Delivery = preparation + courier travel (straight-line distance x detour factor / courier speed),
rounded up to whole minutes; pickup = preparation alone (DESIGN.md, Routing).
"""

import math

from o2o.geo import METRES_PER_KM

MINUTES_PER_HOUR = 60.0


def travel_minutes(distance_m: float, detour_factor: float, courier_speed_kmh: float) -> float:
    """Return the minutes a courier needs for a straight-line distance (roads make it longer)."""
    if not math.isfinite(distance_m) or distance_m < 0:
        raise ValueError("distance must be a finite number of metres, at least 0")
    if detour_factor < 1:
        raise ValueError("the detour factor is at least 1 (roads are never shorter)")
    if courier_speed_kmh <= 0:
        raise ValueError("courier speed must be positive")
    return distance_m * detour_factor / (courier_speed_kmh * METRES_PER_KM / MINUTES_PER_HOUR)


def delivery_eta_minutes(
    prep_minutes: int, distance_m: float, detour_factor: float, courier_speed_kmh: float
) -> int:
    """Return whole minutes until the door: preparation plus courier travel, rounded up."""
    travel = travel_minutes(distance_m, detour_factor, courier_speed_kmh)
    # Round away float noise first: 2.0000000000000004 minutes is 2 minutes, not 3.
    return pickup_eta_minutes(prep_minutes) + math.ceil(round(travel, 9))


def pickup_eta_minutes(prep_minutes: int) -> int:
    """Return whole minutes until a pickup order is ready at the store."""
    if prep_minutes < 0:
        raise ValueError("preparation time cannot be negative")
    return int(prep_minutes)
