"""SLA reports per store and period: deliveries, on-time rate, p50/p95 minutes from release to
hand-over, breaches and compensation, computed in SQL."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o.errors import InvalidInput, NotFound
from o2o.i18n import gettext as _
from o2o.users.models import Role, User
from stores.models import Store

MAX_PERIOD = timedelta(days=366)
MAX_BREACHES_LISTED = 1000


def check_access(session: Session, user: User, store_id: int) -> Store:
    """Let admins read any store's report and pharmacists their own stores' (others: 404)."""
    store = session.get(Store, store_id)
    if store is None or (user.role is Role.PHARMACIST and store_id not in user.store_ids):
        raise NotFound(_("No such store."), code="store_not_found")
    return store


def delivery_stats(
    session: Session, *, from_: datetime, to: datetime, store_id: int | None = None
) -> dict[str, Any]:
    """Count deliveries completed in [from_, to) (one store, or all) with on-time rate and
    p50/p95 minutes from release to hand-over."""
    store_filter = "o.store_id = :store_id AND" if store_id is not None else ""
    row = session.execute(
        text(
            f"""
            SELECT count(*) AS delivered,
                   count(*) FILTER (WHERE o.completed_at <= o.sla_deadline) AS on_time,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY m.minutes) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY m.minutes) AS p95
            FROM orders o
            CROSS JOIN LATERAL (
                SELECT EXTRACT(EPOCH FROM (o.completed_at - o.released_at)) / 60.0 AS minutes
            ) m
            WHERE {store_filter} o.fulfillment = 'delivery'
              AND o.status = 'completed' AND o.released_at IS NOT NULL
              AND o.completed_at >= :from AND o.completed_at < :to
            """
        ),
        {"store_id": store_id, "from": from_, "to": to},
    ).one()
    return {
        "delivered": row.delivered,
        "on_time": row.on_time,
        "on_time_rate": round(row.on_time / row.delivered, 4) if row.delivered else None,
        "p50_minutes": round(row.p50, 1) if row.p50 is not None else None,
        "p95_minutes": round(row.p95, 1) if row.p95 is not None else None,
    }


def sla_report(session: Session, store: Store, *, from_: datetime, to: datetime) -> dict[str, Any]:
    """Report a store's deliveries completed in [from_, to) and its breaches due in it."""
    if from_.tzinfo is None or to.tzinfo is None:
        raise InvalidInput(
            _("Give from and to with a UTC offset, e.g. 2026-11-23T00:00:00+08:00."),
            code="invalid_period",
        )
    if from_ >= to:
        raise InvalidInput(_("`from` must be before `to`."), code="invalid_period")
    if to - from_ > MAX_PERIOD:
        raise InvalidInput(_("A report covers at most 366 days."), code="invalid_period")
    params = {"store_id": store.id, "from": from_, "to": to}
    stats = delivery_stats(session, from_=from_, to=to, store_id=store.id)
    breaches = session.execute(
        text(
            """
            SELECT b.order_id, b.deadline, o.completed_at AS delivered_at, b.reason,
                   b.compensation_minor
            FROM sla_breaches b JOIN orders o ON o.id = b.order_id
            WHERE b.store_id = :store_id AND b.deadline >= :from AND b.deadline < :to
            ORDER BY b.deadline, b.order_id
            LIMIT :limit
            """
        ),
        params | {"limit": MAX_BREACHES_LISTED},
    ).all()
    totals = session.execute(
        text(
            """
            SELECT count(*) AS n, COALESCE(sum(compensation_minor), 0) AS compensation_minor
            FROM sla_breaches
            WHERE store_id = :store_id AND deadline >= :from AND deadline < :to
            """
        ),
        params,
    ).one()
    delivered = stats["delivered"]
    return {
        "store_id": store.id,
        "from_": from_,
        "to": to,
        "delivered": delivered,
        "on_time": stats["on_time"],
        "on_time_rate": stats["on_time_rate"],
        "p50_minutes": stats["p50_minutes"],
        "p95_minutes": stats["p95_minutes"],
        "breaches": [dict(row._mapping) for row in breaches],
        "breach_count": totals.n,
        "compensation_minor": int(totals.compensation_minor),
        "currency": store.currency,
    }
