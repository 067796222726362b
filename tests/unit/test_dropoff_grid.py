"""The drop-off grid: a fixed cell per point, its centre never far, the same for the whole cell."""

import math

from hypothesis import given
from hypothesis import strategies as st

from dispatch.batching import distance_m
from o2o.geo import snap_to_grid

CELL_M = 200.0
# Half a cell's diagonal, with a little room for the cells' curvature on the sphere.
HALF_DIAGONAL_M = CELL_M * math.sqrt(2) / 2 * 1.01
# Where people live: the grid's cells are square there (near the poles a row is one wide cell).
lats = st.floats(min_value=-80, max_value=80, allow_nan=False)
lons = st.floats(min_value=-180, max_value=180, allow_nan=False)


def _centre(lat: float, lon: float) -> tuple[float, float]:
    c = snap_to_grid(lat, lon, CELL_M)
    return c["lat"], c["lon"]


@given(lats, lons)
def test_the_centre_is_within_half_a_cell_diagonal_and_is_its_own_centre(lat, lon):
    centre = _centre(lat, lon)
    assert distance_m((lat, lon), centre) <= HALF_DIAGONAL_M
    assert _centre(*centre) == centre  # the centre lies in its own cell: stable, no drift


@given(lats, lons, st.floats(-0.45, 0.45), st.floats(-0.45, 0.45))
def test_every_point_of_a_cell_shows_the_same_centre(lat, lon, north, east):
    centre = _centre(lat, lon)
    # A point within 45% of a cell from the centre, either way, is in the same cell.
    metres_per_deg = 111_195.0
    moved = (
        centre[0] + north * CELL_M / metres_per_deg,
        centre[1] + east * CELL_M / (metres_per_deg * math.cos(math.radians(centre[0]))),
    )
    assert _centre(*moved) == centre


def test_neighbouring_cells_are_about_a_cell_apart_and_the_antimeridian_has_no_sliver():
    a, b = _centre(31.2304, 121.4737), _centre(31.2304 + 250 / 111_195.0, 121.4737)
    assert a != b and 150 < distance_m(a, b) < 260
    west, east = _centre(10.0, 179.99999), _centre(10.0, -179.99999)
    assert 150 < distance_m(west, east) < 260
