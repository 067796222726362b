"""Geography in one place: SRID, points in and out of the API, GeoJSON areas validated by Shapely.

Points are WGS84 (SRID 4326) stored as `geography`; API points are {"lat", "lon"}; areas are
GeoJSON geometries (lon, lat order).
"""

from typing import Any

import shapely
from geoalchemy2.elements import WKBElement, WKTElement
from geoalchemy2.shape import from_shape, to_shape
from pydantic import BaseModel, ConfigDict, Field, StrictFloat
from shapely.geometry import MultiPolygon, Point, Polygon, mapping, shape
from shapely.validation import explain_validity

SRID = 4326

# Mean earth radius; used only for rough sizing (e.g. a bounding-box margin), never for results.
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
