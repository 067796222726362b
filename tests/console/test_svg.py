"""The server-rendered SVG chart and map: parsed as XML and checked element by element."""

import math
import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from o2o.console.svg import DayRate, MapPoint, delivery_map, on_time_chart, project
from tests.console.helpers import square_zone

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"svg:title[@id='{title_id}']", NS).text
    assert root.find(f"svg:desc[@id='{desc_id}']", NS).text
    return root


def _path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+) (-?[\d.]+)", d)]


def test_chart_draws_one_bar_per_day_with_deliveries_scaled_to_the_rate():
    start = date(2026, 11, 1)
    days = [
        DayRate(start, delivered=10, on_time=10),
        DayRate(start + timedelta(days=1), delivered=4, on_time=2),
        DayRate(start + timedelta(days=2), delivered=0, on_time=0),
        DayRate(start + timedelta(days=3), delivered=20, on_time=19),
    ]
    root = parse(on_time_chart(days, target=0.95))
    bars = root.findall(".//svg:rect[@class]", NS)
    bars = [b for b in bars if b.get("class").startswith("bar")]
    assert [b.get("data-day") for b in bars] == ["2026-11-01", "2026-11-02", "2026-11-04"]
    heights = {b.get("data-day"): float(b.get("height")) for b in bars}
    # 100% is twice as tall as 50%, and 95% is 95% of 100%.
    assert heights["2026-11-01"] == pytest.approx(2 * heights["2026-11-02"], rel=0.01)
    assert heights["2026-11-04"] == pytest.approx(0.95 * heights["2026-11-01"], rel=0.01)
    # Below target is marked (by class and colour), the day without deliveries is a gap.
    below = [b.get("data-day") for b in bars if "bar--below" in b.get("class")]
    assert below == ["2026-11-02"]
    assert len(root.findall(".//svg:text[@class='no-data']", NS)) == 1
    # Each bar says its numbers (tooltip and screen readers).
    assert bars[1].find("svg:title", NS).text == "2026-11-02: 50% on time (2 of 4)"
    assert root.find(".//svg:line[@class='target']", NS) is not None
    assert "34 deliveries, 31 on time" in root.find("svg:desc", NS).text


def test_chart_without_deliveries_says_so():
    root = parse(on_time_chart([DayRate(date(2026, 11, 1), 0, 0)]))
    assert root.find("svg:desc", NS).text == "No deliveries in this period."
    assert not [r for r in root.findall(".//svg:rect", NS) if "bar" in (r.get("class") or "")]


def test_projection_is_equirectangular_scaled_by_cos_latitude():
    # Near 60°N a degree of longitude is half as long as a degree of latitude.
    x, y = project(60.0, 11.0, 60.0, 10.0)
    x2, y2 = project(61.0, 10.0, 60.0, 10.0)
    assert y == 0 and x2 == 0
    assert x / y2 == pytest.approx(math.cos(math.radians(60)), rel=1e-9)
    assert y2 == pytest.approx(111_195, rel=1e-3)  # metres per degree of latitude


def test_map_places_store_zone_and_dropoffs_where_they_are():
    lat, lon = 31.2304, 121.4737
    zone = square_zone(lat, lon, 0.02)
    dropoffs = [
        MapPoint(lat + 0.01, lon, "north, on time", "on_time"),
        MapPoint(lat, lon + 0.01, "east, late", "late"),
        MapPoint(lat - 0.01, lon - 0.01, "south-west, open", "open"),
    ]
    root = parse(delivery_map(MapPoint(lat, lon, "Jing'an <Store>"), zone, dropoffs))
    width, height = (float(v) for v in root.get("viewBox").split()[2:])

    store = root.find(".//svg:rect[@class='store']", NS)
    sx = float(store.get("x")) + float(store.get("width")) / 2
    sy = float(store.get("y")) + float(store.get("height")) / 2
    # The zone is centred on the store, so the store is in the middle of the map.
    assert sx == pytest.approx(width / 2, abs=1) and sy == pytest.approx(height / 2, abs=1)
    assert root.find(".//svg:text[@class='store-label']", NS).text == "Jing'an <Store>"

    circles = {c.find("svg:title", NS).text: c for c in root.findall(".//svg:circle", NS)}
    north, east, sw = circles["north, on time"], circles["east, late"], circles["south-west, open"]
    assert float(north.get("cy")) < sy and float(north.get("cx")) == pytest.approx(sx, abs=0.5)
    assert float(east.get("cx")) > sx and float(east.get("cy")) == pytest.approx(sy, abs=0.5)
    assert float(sw.get("cx")) < sx and float(sw.get("cy")) > sy
    assert "dropoff--late" in east.get("class") and "dropoff--on_time" in north.get("class")
    # Equal distances north and east are not equal in degrees: 0.01° east is shorter by cos(lat).
    north_px = sy - float(north.get("cy"))
    east_px = float(east.get("cx")) - sx
    assert east_px / north_px == pytest.approx(math.cos(math.radians(lat)), rel=0.01)

    zone_path = root.find(".//svg:path[@class='zone']", NS)
    points = _path_points(zone_path.get("d"))
    assert len(points) == 5
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    assert 0 <= min(xs) < sx < max(xs) <= width and 0 <= min(ys) < sy < max(ys) <= height
    assert root.find(".//svg:text[@class='scale-label']", NS).text.endswith(("m", "km"))
    desc = root.find("svg:desc", NS).text
    assert "3 drop-offs today (1 on time, 1 late, 1 not yet delivered)" in desc


def test_map_draws_multipolygon_holes_and_a_store_without_zone():
    lat, lon = 31.2, 121.4
    outer = square_zone(lat, lon, 0.03)["coordinates"][0]
    hole = list(reversed(square_zone(lat, lon, 0.01)["coordinates"][0]))
    other = square_zone(lat + 0.1, lon, 0.01)["coordinates"]
    zone = {"type": "MultiPolygon", "coordinates": [[outer, hole], other]}
    root = parse(delivery_map(MapPoint(lat, lon), zone, []))
    paths = root.findall(".//svg:path[@class='zone']", NS)
    assert len(paths) == 2
    assert paths[0].get("d").count("M") == 2 and paths[0].get("fill-rule") == "evenodd"

    bare = parse(delivery_map(MapPoint(lat, lon), None, []))
    assert bare.find(".//svg:path[@class='zone']", NS) is None
    assert "no delivery zone" in bare.find("svg:desc", NS).text
