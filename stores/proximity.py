"""Stores nearest first: what search and the nearby list share.

Both walk the GiST index in `<->` order, the distance on the mean sphere, and answer in the exact
spheroid distance (`ST_Distance` on geography). SPHEROID_BOUND links the two: a store at sphere
distance d is at least d x (1 - SPHEROID_BOUND) away on the spheroid, which proves when a list
is final and how far past the radius the sphere stream must run.
"""

import math
from collections.abc import Sequence

from sqlalchemy import Row

from o2o.config import get_settings
from o2o.errors import InvalidInput

MAX_LIMIT = 100

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
            f"The {what} must have lat in [-90, 90] and lon in [-180, 180].",
            code="invalid_location",
            details={"lat": lat, "lon": lon},
        )


def check_limit(limit: int) -> None:
    """Refuse a result count outside 1..MAX_LIMIT with 422 invalid_limit."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}.", code="invalid_limit")


def search_radius(radius_m: float | None) -> float:
    """Return the radius to search (the maximum when None); 422 invalid_radius beyond it."""
    max_radius = get_settings().search_max_radius_m
    if radius_m is None:
        return max_radius
    if not (math.isfinite(radius_m) and 0 < radius_m <= max_radius):
        raise InvalidInput(
            f"The search radius must be more than 0 and at most {max_radius:g} m.",
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
