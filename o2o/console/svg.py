"""Server-rendered SVG: the on-time rate chart and the delivery map (no tiles, no scripts).

Pure functions over plain values, so they are tested without a database or a browser. Colours are
presentation attributes (the console's CSP forbids inline styles) and every figure carries a
<title> and <desc> for screen readers; the pages also show the numbers as a table.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from o2o import i18n
from o2o.geo import EARTH_RADIUS_M
from o2o.i18n import gettext as _

SVG_NS = "http://www.w3.org/2000/svg"
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180

GRID = "#c8ccd2"
AXIS = "#3d434b"
TEXT = "#1f2328"
GOOD = "#1a7f37"
BAD = "#b42318"
OPEN = "#1f5fbf"
ZONE_FILL = "#2f6fdf"
STORE = "#6b2fbf"


def _attrs(**attrs: Any) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        if isinstance(value, float):
            value = _num(value)
        parts.append(f"{name}={quoteattr(str(value))}")
    return " ".join(parts)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _el(tag: str, content: str | None = None, **attrs: Any) -> str:
    a = _attrs(**attrs)
    opening = f"<{tag} {a}" if a else f"<{tag}"
    if content is None:
        return opening + "/>"
    return f"{opening}>{content}</{tag}>"


def _svg(
    width: int, height: int, ident: str, title: str, desc: str, body: Iterable[str], css_class: str
) -> str:
    head = (
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" class="{css_class}" '
        f'aria-labelledby="{ident}-title {ident}-desc" preserveAspectRatio="xMidYMid meet" '
        f'font-family="system-ui, sans-serif" font-size="12">'
    )
    return "".join(
        [
            head,
            _el("title", escape(title), id=f"{ident}-title"),
            _el("desc", escape(desc), id=f"{ident}-desc"),
            *body,
            "</svg>",
        ]
    )


# --- on-time rate per day ------------------------------------------------------------------


@dataclass(frozen=True)
class DayRate:
    day: date
    delivered: int
    on_time: int

    @property
    def rate(self) -> float | None:
        return self.on_time / self.delivered if self.delivered else None


def on_time_chart(
    days: Sequence[DayRate],
    *,
    target: float | None = 0.95,
    width: int = 640,
    height: int = 260,
    ident: str = "sla-chart",
) -> str:
    """Bar chart of the on-time rate per day; days without deliveries show a gap, not a zero."""
    # The top margin holds the target label, clear of the bars.
    left, right, top, bottom = 48, 12, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []

    def y_of(rate: float) -> float:
        return top + plot_h * (1 - rate)

    for pct in (0, 25, 50, 75, 100):
        y = y_of(pct / 100)
        body.append(_el("line", x1=left, x2=left + plot_w, y1=y, y2=y, stroke=GRID, stroke_width=1))
        body.append(
            _el("text", f"{pct}%", x=left - 6, y=y + 4, text_anchor="end", fill=TEXT, class_="tick")
        )
    body.append(_el("line", x1=left, x2=left, y1=top, y2=top + plot_h, stroke=AXIS, stroke_width=1))
    body.append(
        _el(
            "line",
            x1=left,
            x2=left + plot_w,
            y1=top + plot_h,
            y2=top + plot_h,
            stroke=AXIS,
            stroke_width=1,
        )
    )

    n = len(days)
    slot = plot_w / n if n else plot_w
    bar_w = max(2.0, min(40.0, slot * 0.7))
    # Label at most ~12 days so the axis stays readable on a tablet.
    label_every = max(1, math.ceil(n / 12)) if n else 1
    bars = []
    for i, d in enumerate(days):
        cx = left + slot * (i + 0.5)
        rate = d.rate
        if rate is None:
            bars.append(
                _el(
                    "text",
                    "–",
                    x=cx,
                    y=top + plot_h - 4,
                    text_anchor="middle",
                    fill=AXIS,
                    class_="no-data",
                )
            )
        else:
            meets = target is None or rate >= target
            y = y_of(rate)
            label = _("{day}: {rate} on time ({on_time} of {delivered})").format(
                day=d.day.isoformat(),
                rate=f"{rate * 100:.0f}%",
                on_time=d.on_time,
                delivered=d.delivered,
            )
            bars.append(
                _el(
                    "rect",
                    _el("title", escape(label)),
                    x=cx - bar_w / 2,
                    y=y,
                    width=bar_w,
                    height=max(top + plot_h - y, 0.5),
                    fill=GOOD if meets else BAD,
                    class_="bar" + ("" if meets else " bar--below"),
                    data_day=d.day.isoformat(),
                    data_rate=f"{rate:.4f}",
                )
            )
        if i % label_every == 0:
            bars.append(
                _el(
                    "text",
                    i18n.day(d.day, "MMMd"),
                    x=cx,
                    y=top + plot_h + 16,
                    text_anchor="middle",
                    fill=TEXT,
                    class_="day",
                )
            )
    body.extend(bars)
    if target is not None:
        y = y_of(target)
        body.append(
            _el(
                "line",
                x1=left,
                x2=left + plot_w,
                y1=y,
                y2=y,
                stroke=AXIS,
                stroke_width=1.5,
                stroke_dasharray="6 4",
                class_="target",
            )
        )
        body.append(
            _el(
                "text",
                _("- - target {rate}").format(rate=f"{target * 100:.0f}%"),
                x=left + plot_w,
                y=top - 12,
                text_anchor="end",
                fill=TEXT,
                class_="target-label",
            )
        )
    if not n:
        body.append(
            _el(
                "text",
                _("No days in this period"),
                x=left + plot_w / 2,
                y=top + plot_h / 2,
                text_anchor="middle",
                fill=TEXT,
            )
        )

    measured = [d for d in days if d.rate is not None]
    if measured:
        total = sum(d.delivered for d in measured)
        on_time = sum(d.on_time for d in measured)
        desc = _(
            "{days} days, {total} deliveries, {on_time} on time ({rate}). Lowest day {lowest}."
        ).format(
            days=len(days),
            total=total,
            on_time=on_time,
            rate=f"{on_time / total * 100:.0f}%",
            lowest=min(measured, key=lambda d: d.rate).day.isoformat(),
        )
    else:
        desc = _("No deliveries in this period.")
    return _svg(width, height, ident, _("On-time delivery rate per day"), desc, body, "chart")


# --- delivery map --------------------------------------------------------------------------


@dataclass(frozen=True)
class MapPoint:
    lat: float
    lon: float
    label: str = ""
    kind: str = "open"  # "on_time", "late", "open" for drop-offs


def project(lat: float, lon: float, lat0: float, lon0: float) -> tuple[float, float]:
    """Equirectangular projection around (lat0, lon0), in metres east and north.

    x is scaled by cos(lat0) so a metre east and a metre north are the same length near the
    store; good enough for a city-sized map, and needs no tiles or projection library.
    """
    x = (lon - lon0) * math.cos(math.radians(lat0)) * METRES_PER_DEGREE
    y = (lat - lat0) * METRES_PER_DEGREE
    return x, y


def _rings(geojson: dict[str, Any] | None) -> list[list[list[tuple[float, float]]]]:
    """Polygons as lists of rings of (lon, lat), from a GeoJSON Polygon or MultiPolygon."""
    if not geojson:
        return []
    coords = geojson.get("coordinates") or []
    polygons = [coords] if geojson.get("type") == "Polygon" else coords
    return [[[(float(p[0]), float(p[1])) for p in ring] for ring in poly] for poly in polygons]


def _nice_distance(max_m: float) -> float:
    """The largest 1-2-5 step (in metres) not above max_m."""
    if max_m <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(max_m))
    for step in (5, 2, 1):
        if step * exp <= max_m:
            return step * exp
    return exp


def _distance_label(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def delivery_map(
    store: MapPoint,
    zone: dict[str, Any] | None,
    dropoffs: Sequence[MapPoint],
    *,
    width: int = 640,
    height: int = 480,
    ident: str = "sla-map",
) -> str:
    """Map of the store, its delivery zone and drop-offs, projected around the store."""
    pad = 28
    lat0, lon0 = store.lat, store.lon
    rings = _rings(zone)
    xs: list[float] = [0.0]
    ys: list[float] = [0.0]
    for poly in rings:
        for ring in poly:
            for lon, lat in ring:
                x, y = project(lat, lon, lat0, lon0)
                xs.append(x)
                ys.append(y)
    for p in dropoffs:
        x, y = project(p.lat, p.lon, lat0, lon0)
        xs.append(x)
        ys.append(y)
    min_x, max_x, min_y, max_y = min(xs), max(xs), min(ys), max(ys)
    # At least 1 km across, so a lone store is not drawn at an absurd zoom.
    span_x = max(max_x - min_x, 1000.0)
    span_y = max(max_y - min_y, 1000.0)
    cx, cy = (min_x + max_x) / 2, (min_y + max_y) / 2
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)

    def to_view(lat: float, lon: float) -> tuple[float, float]:
        x, y = project(lat, lon, lat0, lon0)
        # SVG y grows downwards; north is up.
        return width / 2 + (x - cx) * scale, height / 2 - (y - cy) * scale

    body: list[str] = [
        _el("rect", x=0, y=0, width=width, height=height, fill="#f6f8fa", class_="map-bg")
    ]
    for poly in rings:
        d = []
        for ring in poly:
            pts = [to_view(lat, lon) for lon, lat in ring]
            d.append("M" + " L".join(f"{_num(x)} {_num(y)}" for x, y in pts) + " Z")
        body.append(
            _el(
                "path",
                _el("title", _("Delivery zone")),
                d=" ".join(d),
                fill=ZONE_FILL,
                fill_opacity="0.12",
                stroke=ZONE_FILL,
                stroke_width=2,
                fill_rule="evenodd",
                class_="zone",
            )
        )
    colours = {"on_time": GOOD, "late": BAD, "open": OPEN}
    for p in dropoffs:
        x, y = to_view(p.lat, p.lon)
        body.append(
            _el(
                "circle",
                _el("title", escape(p.label or p.kind.replace("_", " "))),
                cx=x,
                cy=y,
                r=6,
                fill=colours.get(p.kind, OPEN),
                stroke="#ffffff",
                stroke_width=1.5,
                class_=f"dropoff dropoff--{p.kind}",
            )
        )
    sx, sy = to_view(store.lat, store.lon)
    body.append(
        _el(
            "rect",
            _el("title", escape(store.label or _("Store"))),
            x=sx - 8,
            y=sy - 8,
            width=16,
            height=16,
            fill=STORE,
            stroke="#ffffff",
            stroke_width=2,
            class_="store",
        )
    )
    if store.label:
        body.append(
            _el(
                "text",
                escape(store.label),
                x=sx + 12,
                y=sy - 10,
                fill=TEXT,
                font_weight="600",
                class_="store-label",
            )
        )
    # Scale bar (bottom left) and north arrow (top right).
    bar_m = _nice_distance((width - 2 * pad) / 4 / scale)
    bar_px = bar_m * scale
    by = height - 14
    body.append(
        _el(
            "path",
            d=f"M{pad} {by - 5} V{by} H{_num(pad + bar_px)} V{by - 5}",
            fill="none",
            stroke=AXIS,
            stroke_width=2,
            class_="scale-bar",
        )
    )
    body.append(
        _el(
            "text",
            _distance_label(bar_m),
            x=pad + bar_px + 6,
            y=by,
            fill=TEXT,
            class_="scale-label",
        )
    )
    nx, ny = width - pad, pad
    body.append(_el("path", d=f"M{nx} {ny - 14} L{nx - 6} {ny} L{nx + 6} {ny} Z", fill=AXIS))
    body.append(_el("text", _("N"), x=nx, y=ny + 14, text_anchor="middle", fill=TEXT))

    counts = {k: sum(1 for p in dropoffs if p.kind == k) for k in colours}
    desc = (
        _("Store at {lat}, {lon}").format(lat=f"{store.lat:.5f}", lon=f"{store.lon:.5f}")
        + (_("; delivery zone outlined") if rings else _("; no delivery zone"))
        + _(
            "; {count} drop-offs today ({on_time} on time, {late} late, {open} not yet delivered)."
        ).format(
            count=len(dropoffs), on_time=counts["on_time"], late=counts["late"], open=counts["open"]
        )
    )
    return _svg(
        width, height, ident, _("Store, delivery zone and today's drop-offs"), desc, body, "map"
    )


# --- stock analytics: Pareto (ABC) and days of stock -------------------------------------

CLASS_COLOURS = {"A": "#1f5fbf", "B": "#b7791f", "C": "#8a9099"}


@dataclass(frozen=True)
class ParetoBar:
    label: str
    value_minor: int
    cumulative_share: float
    abc_class: str


def pareto_chart(
    bars: Sequence[ParetoBar],
    *,
    width: int = 640,
    height: int = 280,
    ident: str = "abc-chart",
) -> str:
    """Pareto chart: sales value per product, best first, coloured by ABC class, with the
    cumulative share as a line and the 80% and 95% class limits."""
    left, right, top, bottom = 56, 44, 20, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []
    peak = max((b.value_minor for b in bars), default=0) or 1
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - pct / 100)
        body.append(_el("line", x1=left, x2=left + plot_w, y1=y, y2=y, stroke=GRID, stroke_width=1))
        body.append(_el("text", f"{pct}%", x=left + plot_w + 6, y=y + 4, fill=TEXT, class_="tick"))
    for limit in (80, 95):
        y = top + plot_h * (1 - limit / 100)
        body.append(
            _el(
                "line",
                x1=left,
                x2=left + plot_w,
                y1=y,
                y2=y,
                stroke=AXIS,
                stroke_width=1,
                stroke_dasharray="6 4",
                class_="class-limit",
            )
        )
    body.append(_el("line", x1=left, x2=left, y1=top, y2=top + plot_h, stroke=AXIS, stroke_width=1))
    body.append(
        _el("text", _("sales"), x=left - 6, y=top + 4, text_anchor="end", fill=TEXT, class_="tick")
    )
    n = len(bars)
    slot = plot_w / n if n else plot_w
    bar_w = max(1.0, min(36.0, slot * 0.8))
    points = []
    for i, b in enumerate(bars):
        cx = left + slot * (i + 0.5)
        h = plot_h * b.value_minor / peak
        body.append(
            _el(
                "rect",
                _el(
                    "title",
                    escape(
                        _("{label}: class {abc_class}, cumulative {share}%").format(
                            label=b.label,
                            abc_class=b.abc_class,
                            share=f"{b.cumulative_share * 100:.0f}",
                        )
                    ),
                ),
                x=cx - bar_w / 2,
                y=top + plot_h - h,
                width=bar_w,
                height=max(h, 0.5),
                fill=CLASS_COLOURS.get(b.abc_class, AXIS),
                class_=f"bar bar--{b.abc_class}",
                data_class=b.abc_class,
            )
        )
        points.append(f"{_num(cx)},{_num(top + plot_h * (1 - b.cumulative_share))}")
    if points:
        body.append(
            _el(
                "polyline",
                points=" ".join(points),
                fill="none",
                stroke=TEXT,
                stroke_width=1.5,
                class_="cumulative",
            )
        )
    else:
        body.append(
            _el(
                "text",
                _("No sales in this period"),
                x=left + plot_w / 2,
                y=top + plot_h / 2,
                text_anchor="middle",
                fill=TEXT,
            )
        )
    counts = {c: sum(1 for b in bars if b.abc_class == c) for c in "ABC"}
    desc = _(
        "{n} products by sales value: {a} in class A, {b} in B, {c} in C. "
        "The line is the cumulative share of sales."
    ).format(n=n, a=counts["A"], b=counts["B"], c=counts["C"])
    title = _("Sales by product (ABC, Pareto)")
    return _svg(width, height, ident, title, desc, body, "chart")


@dataclass(frozen=True)
class StockDays:
    label: str
    days: float | None
    abc_class: str


def stock_days_chart(
    rows: Sequence[StockDays],
    *,
    cap_days: float = 180,
    width: int = 640,
    row_h: int = 18,
    ident: str = "stock-days-chart",
) -> str:
    """Horizontal bars: days of stock per product at the period's sales rate, capped at
    `cap_days` (a product that did not sell shows as "no sales")."""
    left, right, top, bottom = 200, 56, 10, 24
    plot_w = width - left - right
    height = top + bottom + row_h * max(len(rows), 1)
    body: list[str] = []
    for tick in (0, cap_days / 2, cap_days):
        x = left + plot_w * tick / cap_days
        body.append(
            _el("line", x1=x, x2=x, y1=top, y2=height - bottom, stroke=GRID, stroke_width=1)
        )
        body.append(
            _el(
                "text",
                f"{tick:.0f} d",
                x=x,
                y=height - bottom + 14,
                text_anchor="middle",
                fill=TEXT,
                class_="tick",
            )
        )
    for i, r in enumerate(rows):
        y = top + row_h * i
        label = r.label if len(r.label) <= 30 else r.label[:29] + "…"
        body.append(
            _el(
                "text",
                escape(label),
                x=left - 6,
                y=y + row_h * 0.7,
                text_anchor="end",
                fill=TEXT,
                class_="label",
            )
        )
        if r.days is None:
            body.append(
                _el(
                    "text",
                    _("no sales"),
                    x=left + 4,
                    y=y + row_h * 0.7,
                    fill=BAD,
                    class_="no-sales",
                )
            )
            continue
        w = plot_w * min(r.days, cap_days) / cap_days
        body.append(
            _el(
                "rect",
                _el(
                    "title",
                    escape(
                        _("{label}: {days} days of stock").format(
                            label=r.label, days=f"{r.days:.1f}"
                        )
                    ),
                ),
                x=left,
                y=y + 2,
                width=max(w, 0.5),
                height=row_h - 4,
                fill=CLASS_COLOURS.get(r.abc_class, AXIS),
                class_="bar",
                data_days=f"{r.days:.1f}",
            )
        )
        if r.days > cap_days:
            body.append(_el("text", f"{r.days:.0f}", x=left + w + 4, y=y + row_h * 0.7, fill=TEXT))
    if not rows:
        body.append(_el("text", _("No stock"), x=left + plot_w / 2, y=top + row_h * 0.7, fill=TEXT))
    desc = _("Days of stock for {n} products, capped at {cap} days.").format(
        n=len(rows), cap=f"{cap_days:.0f}"
    )
    return _svg(width, height, ident, _("Days of stock per product"), desc, body, "chart")
