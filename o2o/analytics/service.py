"""Stock analytics of one store over its last N local days, in one SQL statement per answer.

The period is the store's calendar: from local midnight N-1 days before the store's today to
local midnight after it (o2o.clock.today in the store's zone), so a store east or west of UTC
counts its own days. Sales are completed order lines (quantity x the unit price charged),
by completion time; stock is the store's lots now (on hand x lot price).
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import NotFound
from o2o.users.models import Role, User
from stores.models import Store

_PRODUCTS_SQL = """
WITH sales AS (
    SELECT l.product_id, sum(l.quantity * l.price_minor) AS sales_minor,
           sum(l.quantity) AS units_sold
    FROM orders o JOIN order_lines l ON l.order_id = o.id
    WHERE o.store_id = :store_id AND o.status = 'completed'
      AND o.completed_at >= :start AND o.completed_at < :end
    GROUP BY l.product_id
),
stock AS (
    SELECT product_id, sum(on_hand) AS on_hand,
           sum(on_hand * price_minor) AS stock_value_minor,
           sum(on_hand) FILTER (WHERE expiry_date <= :near_day) AS near_expiry_units,
           sum(on_hand * price_minor) FILTER (WHERE expiry_date <= :near_day)
               AS near_expiry_value_minor
    FROM lots WHERE store_id = :store_id AND on_hand > 0
    GROUP BY product_id
),
joined AS (
    SELECT COALESCE(s.product_id, k.product_id) AS product_id,
           COALESCE(s.sales_minor, 0) AS sales_minor, COALESCE(s.units_sold, 0) AS units_sold,
           COALESCE(k.on_hand, 0) AS on_hand,
           COALESCE(k.stock_value_minor, 0) AS stock_value_minor,
           COALESCE(k.near_expiry_units, 0) AS near_expiry_units,
           COALESCE(k.near_expiry_value_minor, 0) AS near_expiry_value_minor
    FROM sales s FULL JOIN stock k ON k.product_id = s.product_id
),
ranked AS (
    SELECT j.*,
           sum(sales_minor) OVER (ORDER BY sales_minor DESC, product_id
                                  ROWS UNBOUNDED PRECEDING) - sales_minor AS before_minor,
           sum(sales_minor) OVER () AS total_minor
    FROM joined j
)
SELECT r.product_id, p.name, r.sales_minor, r.units_sold, r.on_hand, r.stock_value_minor,
       r.near_expiry_units, r.near_expiry_value_minor, r.before_minor, r.total_minor,
       -- the rule of o2o.analytics.abc.abc_class
       CASE WHEN r.sales_minor <= 0 OR r.total_minor <= 0 THEN 'C'
            WHEN r.before_minor * 100 < r.total_minor * 80 THEN 'A'
            WHEN r.before_minor * 100 < r.total_minor * 95 THEN 'B'
            ELSE 'C' END AS abc_class,
       -- units on hand over the units sold per day of the period
       CASE WHEN r.units_sold > 0
            THEN round(r.on_hand * CAST(:days AS numeric) / r.units_sold, 1) END AS days_of_stock,
       (SELECT max(o.completed_at) FROM orders o JOIN order_lines l ON l.order_id = o.id
        WHERE o.store_id = :store_id AND o.status = 'completed' AND l.product_id = r.product_id)
           AS last_sold_at
FROM ranked r JOIN products p ON p.id = r.product_id
ORDER BY r.sales_minor DESC, r.product_id
"""


@dataclass(frozen=True)
class Period:
    days: int
    first_day: date
    last_day: date
    start: datetime
    end: datetime
    near_expiry_day: date


def check_access(session: Session, user: User, store_id: int) -> Store:
    """Let admins read any store and pharmacists their own stores (others: 404)."""
    store = session.get(Store, store_id)
    if store is None or (user.role is Role.PHARMACIST and store_id not in user.store_ids):
        raise NotFound("No such store.", code="store_not_found")
    return store


def period_for(store: Store, days: int, *, now: datetime | None = None) -> Period:
    """Return the store's last `days` local days, today included, and its near-expiry cut-off."""
    zone = ZoneInfo(store.timezone)
    today = clock.today(store.timezone, at=now or clock.now())
    first = today - timedelta(days=days - 1)
    return Period(
        days=days,
        first_day=first,
        last_day=today,
        start=datetime.combine(first, time(0), tzinfo=zone),
        end=datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone),
        near_expiry_day=today + timedelta(days=get_settings().analytics_near_expiry_days),
    )


def product_rows(session: Session, store: Store, period: Period) -> list[dict]:
    """Return one row per product the store sold in the period or holds now, best seller first."""
    rows = session.execute(
        text(_PRODUCTS_SQL),
        {
            "store_id": store.id,
            "start": period.start,
            "end": period.end,
            "near_day": period.near_expiry_day,
            "days": period.days,
        },
    ).mappings()
    out = []
    for r in rows:
        total = int(r["total_minor"])
        out.append(
            {
                "product_id": r["product_id"],
                "name": r["name"],
                "abc_class": r["abc_class"],
                "sales_minor": int(r["sales_minor"]),
                "units_sold": int(r["units_sold"]),
                "share": round(int(r["sales_minor"]) / total, 4) if total else 0.0,
                "cumulative_share": (
                    round((int(r["before_minor"]) + int(r["sales_minor"])) / total, 4)
                    if total
                    else 0.0
                ),
                "on_hand": int(r["on_hand"]),
                "stock_value_minor": int(r["stock_value_minor"]),
                "days_of_stock": (
                    float(r["days_of_stock"]) if r["days_of_stock"] is not None else None
                ),
                "near_expiry_units": int(r["near_expiry_units"]),
                "near_expiry_value_minor": int(r["near_expiry_value_minor"]),
                "last_sold_at": r["last_sold_at"],
            }
        )
    return out


def _period_view(store: Store, period: Period) -> dict:
    return {
        "store_id": store.id,
        "days": period.days,
        "from": period.first_day,
        "to": period.last_day,
        "timezone": store.timezone,
        "currency": store.currency,
        "near_expiry_days": get_settings().analytics_near_expiry_days,
    }


def abc_report(session: Session, store: Store, days: int, *, now: datetime | None = None) -> dict:
    """Return each product's ABC class, sales, units, days of stock and near-expiry value."""
    period = period_for(store, days, now=now)
    items = product_rows(session, store, period)
    counts = {c: sum(1 for i in items if i["abc_class"] == c) for c in "ABC"}
    return {
        **_period_view(store, period),
        "sales_minor": sum(i["sales_minor"] for i in items),
        "class_counts": counts,
        "items": items,
    }


def turnover_report(
    session: Session, store: Store, days: int, *, now: datetime | None = None
) -> dict:
    """Return the store's turnover over the period, its days of stock, and its dead stock."""
    period = period_for(store, days, now=now)
    items = product_rows(session, store, period)
    sales = sum(i["sales_minor"] for i in items)
    stock = sum(i["stock_value_minor"] for i in items)
    dead = [
        {
            "product_id": i["product_id"],
            "name": i["name"],
            "on_hand": i["on_hand"],
            "stock_value_minor": i["stock_value_minor"],
            "near_expiry_value_minor": i["near_expiry_value_minor"],
            "last_sold_at": i["last_sold_at"],
        }
        for i in items
        if i["units_sold"] == 0 and i["on_hand"] > 0
    ]
    dead.sort(key=lambda d: (-d["stock_value_minor"], d["product_id"]))
    return {
        **_period_view(store, period),
        "sales_minor": sales,
        "units_sold": sum(i["units_sold"] for i in items),
        "stock_value_minor": stock,
        "stock_units": sum(i["on_hand"] for i in items),
        # Sales at selling price over stock at selling price: both sides in the same prices.
        "turnover_ratio": round(sales / stock, 3) if stock else None,
        "annualised_turnover": round(sales / stock * 365 / days, 3) if stock else None,
        "days_of_stock": round(stock * days / sales, 1) if sales else None,
        "near_expiry_value_minor": sum(i["near_expiry_value_minor"] for i in items),
        "dead_stock_value_minor": sum(d["stock_value_minor"] for d in dead),
        "dead_stock": dead,
    }
