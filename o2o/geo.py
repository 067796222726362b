"""Geography in one place: SRID, points in and out of the API, GeoJSON areas validated by Shapely.

Points are WGS84 (SRID 4326) stored as `geography`; API points are {"lat", "lon"}; areas are
GeoJSON geometries (lon, lat order).
"""

import math
from typing import Any

import shapely
from geoalchemy2.elements import WKBElement, WKTElement
from geoalchemy2.shape import from_shape, to_shape
from pydantic import BaseModel, ConfigDict, Field, StrictFloat
from shapely.geometry import MultiPolygon, Point, Polygon, mapping, shape
from shapely.validation import explain_validity

SRID = 4326

# Mean earth radius; used only for rough sizing (a bounding-box margin, the drop-off grid's
# cells), never for distances.
EARTH_RADIUS_M = 6_371_008.8
METRES_PER_KM = 1000.0


class LatLon(BaseModel):
    """A point as the apps send it."""

    model_config = ConfigDict(extra="forbid")

    # Strict: a string or a boolean is refused, not read as a number.
    lat: StrictFloat = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: StrictFloat = Field(ge=-180, le=180, allow_inf_nan=False)


class GeometryError(ValueError):
    """A GeoJSON area that cannot be stored, with the reason."""


def point_wkt(lat: float, lon: float) -> str:
    """Return EWKT for a lat/lon point (lon first, as WKT wants)."""
    return f"SRID={SRID};POINT({lon!r} {lat!r})"


def point_element(lat: float, lon: float) -> WKTElement:
    return WKTElement(f"POINT({lon!r} {lat!r})", srid=SRID, extended=False)


def to_latlon(element: WKBElement | None) -> dict[str, float] | None:
    """Turn a stored point into {"lat", "lon"}."""
    if element is None:
        return None
    pt = to_shape(element)
    return {"lat": pt.y, "lon": pt.x}


def snap_to_grid(lat: float, lon: float, cell_m: float) -> dict[str, float]:
    """Return the centre of the fixed grid cell, about cell_m on a side, that holds a point.

    Rows are an equal share of the meridian about cell_m high; each row is cut into a whole
    number of equal columns about cell_m wide at its middle latitude, so the cells tile the globe
    (no sliver at the antimeridian). No noise: every point of one cell always gives the same
    centre, so asking many times reveals nothing finer than the cell.
    """
    rows = max(1, round(math.pi * EARTH_RADIUS_M / cell_m))
    lat_step = 180.0 / rows
    row = min(rows - 1, max(0, math.floor((lat + 90.0) / lat_step)))
    centre_lat = -90.0 + (row + 0.5) * lat_step
    cols = max(1, round(360.0 * math.cos(math.radians(centre_lat)) / lat_step))
    lon_step = 360.0 / cols
    col = math.floor((lon + 180.0) / lon_step) % cols
    centre_lon = -180.0 + (col + 0.5) * lon_step
    # Rounded to ~0.1 m: the centre is a derived value, and no trailing float noise is shown.
    return {"lat": round(centre_lat, 6), "lon": round(centre_lon, 6)}


def parse_area(geojson: Any) -> Polygon | MultiPolygon:
    """Validate a GeoJSON Polygon/MultiPolygon; raise GeometryError saying why it is refused."""
    if not isinstance(geojson, dict):
        raise GeometryError("A delivery zone must be a GeoJSON geometry object.")
    kind = geojson.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise GeometryError(f"A delivery zone must be a Polygon or MultiPolygon, not {kind!r}.")
    try:
        geom = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise GeometryError(f"The coordinates do not form a {kind}: {exc}") from None
    if geom.is_empty:
        raise GeometryError("The delivery zone is empty.")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise GeometryError("Coordinates must be lon in [-180, 180] and lat in [-90, 90].")
    if not shapely.is_valid(geom):
        raise GeometryError(f"The delivery zone is not a valid polygon: {explain_validity(geom)}.")
    if geom.area == 0:
        raise GeometryError("The delivery zone has no area.")
    return geom


def area_element(geom: Polygon | MultiPolygon) -> WKBElement:
    """Store a validated area; always as MultiPolygon so the column has one type."""
    if isinstance(geom, Polygon):
        geom = MultiPolygon([geom])
    return from_shape(geom, srid=SRID)


def area_geojson(element: WKBElement | None) -> dict[str, Any] | None:
    if element is None:
        return None
    geom = to_shape(element)
    if isinstance(geom, MultiPolygon) and len(geom.geoms) == 1:
        geom = geom.geoms[0]
    return mapping(geom)


def shapely_point(lat: float, lon: float) -> Point:
    return Point(lon, lat)
