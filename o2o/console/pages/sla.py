"""The SLA page: the on-time chart and the map of the zone and the day's drop-offs, as SVG."""

from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from dispatch import reports as sla_reports
from o2o.api import ApiRoute
from o2o.console import queries, svg
from o2o.console.auth import (
    StaffUser,
    csrf_protect,
)
from o2o.console.pages.common import StorePage, store_context
from o2o.console.rendering import humanize, render
from o2o.db import DbSession
from o2o.errors import InvalidInput
from o2o.geo import area_geojson, to_latlon
from o2o.i18n import gettext
from stores.models import Store

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


SLA_DEFAULT_DAYS = 14
# One report query per day drawn; a quarter is plenty on a tablet-sized chart.
SLA_MAX_DAYS = 92
SLA_TARGET = 0.95


def _day_bounds(store: Store, day: date) -> tuple[datetime, datetime]:
    tz = queries.store_zone(store)
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)


def _daily_rates(db: DbSession, store: Store, start: date, end: date) -> list[svg.DayRate]:
    """Deliveries and on-time deliveries per day of the store's calendar, for the chart."""
    days = []
    day = start
    while day <= end:
        day_from, day_to = _day_bounds(store, day)
        stats = sla_reports.delivery_stats(db, from_=day_from, to=day_to, store_id=store.id)
        days.append(svg.DayRate(day, stats["delivered"], stats["on_time"]))
        day += timedelta(days=1)
    return days


def _today_map(db: DbSession, store: Store) -> str:
    """The store, its delivery zone and today's drop-offs (open, on time or late), as SVG."""
    location = to_latlon(store.location)
    dropoffs = [
        svg.MapPoint(
            d.lat,
            d.lon,
            gettext("Order {id}: {status}").format(
                id=str(d.order_id)[:8], status=humanize(d.status)
            ),
            "open" if d.on_time is None else ("on_time" if d.on_time else "late"),
        )
        for d in queries.todays_dropoffs(db, store)
    ]
    return svg.delivery_map(
        svg.MapPoint(location["lat"], location["lon"], store.name),
        area_geojson(store.delivery_zone),
        dropoffs,
    )


def _sla_figures(db: DbSession, store: Store, start: date, end: date) -> dict:
    """The dispatch SLA report for the period, per day for the chart, and today's map."""
    period_from, _ = _day_bounds(store, start)
    _, period_to = _day_bounds(store, end)
    days = _daily_rates(db, store, start, end)
    return {
        "report": sla_reports.sla_report(db, store, from_=period_from, to=period_to),
        "days": days,
        "chart_svg": svg.on_time_chart(days, target=SLA_TARGET),
        "map_svg": _today_map(db, store),
    }


def _sla_period(store: Store, start: date | None, end: date | None) -> tuple[date, date]:
    today = queries.store_today(store)
    end = end or today
    start = start or end - timedelta(days=SLA_DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput(gettext("The start of the period must not be after its end."))
    if (end - start).days + 1 > SLA_MAX_DAYS:
        raise InvalidInput(
            gettext("Show at most {SLA_MAX_DAYS} days at a time.").format(SLA_MAX_DAYS=SLA_MAX_DAYS)
        )
    return start, end


@router.get("/stores/{store_id}/sla", name="sla_page")
def sla_page(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
) -> Response:
    """On-time rate, p50/p95 and breaches for a period, with the chart and today's map."""
    start, end = _sla_period(store, from_, to)
    return render(
        request,
        "sla.html",
        {
            **store_context(db, user, store, "sla"),
            "title": f"SLA · {store.name}",
            "start": start,
            "end": end,
            "target": SLA_TARGET,
            **_sla_figures(db, store, start, end),
        },
    )


def _svg_response(content: str) -> Response:
    return Response(content, media_type="image/svg+xml")


@router.get("/stores/{store_id}/sla/chart.svg", name="sla_chart")
def sla_chart(
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
) -> Response:
    """The on-time chart alone, as an SVG file."""
    start, end = _sla_period(store, from_, to)
    return _svg_response(svg.on_time_chart(_daily_rates(db, store, start, end), target=SLA_TARGET))


@router.get("/stores/{store_id}/sla/map.svg", name="sla_map")
def sla_map(db: DbSession, user: StaffUser, store: StorePage) -> Response:
    """The store, its zone and today's drop-offs, as an SVG file."""
    return _svg_response(_today_map(db, store))
