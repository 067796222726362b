"""A store's stock analytics: the ABC (Pareto) chart, days of stock, dead and near-expiry stock,
and the same figures as a CSV file for a spreadsheet."""

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from o2o.analytics import service as analytics
from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.console import svg
from o2o.console.auth import StaffUser, csrf_protect
from o2o.console.pages.common import StorePage, store_context
from o2o.console.rendering import render
from o2o.db import DbSession
from o2o.i18n import gettext as _

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)

DEFAULT_DAYS = 90
# Bars drawn on the charts: the best sellers; the tables and the CSV have every product.
CHART_PRODUCTS = 40
Days = Annotated[int, Query(ge=1, le=get_settings().analytics_max_days)]

CSV_COLUMNS = (
    "product_id",
    "name",
    "abc_class",
    "sales_minor",
    "units_sold",
    "share",
    "cumulative_share",
    "on_hand",
    "stock_value_minor",
    "days_of_stock",
    "near_expiry_units",
    "near_expiry_value_minor",
    "last_sold_at",
)


@router.get("/stores/{store_id}/analytics", name="stock_analytics")
def stock_analytics(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, days: Days = DEFAULT_DAYS
) -> Response:
    """Show the store's ABC classes, days of stock, turnover and dead stock for a period."""
    abc = analytics.abc_report(db, store, days)
    turnover = analytics.turnover_report(db, store, days)
    top = abc["items"][:CHART_PRODUCTS]
    sold = [i for i in top if i["sales_minor"] > 0]
    return render(
        request,
        "analytics.html",
        {
            **store_context(db, user, store, "analytics"),
            "title": _("Stock analytics · {store}").format(store=store.name),
            "days": days,
            "abc": abc,
            "turnover": turnover,
            "pareto_svg": svg.pareto_chart(
                [
                    svg.ParetoBar(
                        i["name"], i["sales_minor"], i["cumulative_share"], i["abc_class"]
                    )
                    for i in sold
                ]
            ),
            "stock_days_svg": svg.stock_days_chart(
                [svg.StockDays(i["name"], i["days_of_stock"], i["abc_class"]) for i in top]
            ),
        },
    )


@router.get("/stores/{store_id}/analytics.csv", name="stock_analytics_csv")
def stock_analytics_csv(
    db: DbSession, user: StaffUser, store: StorePage, days: Days = DEFAULT_DAYS
) -> Response:
    """Every product's ABC figures as CSV (money in minor units, as in the API)."""
    abc = analytics.abc_report(db, store, days)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in abc["items"]:
        row = []
        for column in CSV_COLUMNS:
            value = item[column]
            if column == "last_sold_at" and value is not None:
                value = value.isoformat()
            elif column == "name":
                value = _spreadsheet_safe(value)
            row.append("" if value is None else value)
        writer.writerow(row)
    filename = f"abc-store-{store.id}-{abc['from'].isoformat()}-{abc['to'].isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _spreadsheet_safe(text: str) -> str:
    """Keep a product name from running as a formula when the file is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
