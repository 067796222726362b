"""Reconciliation: money captured, refunded, paid out for late deliveries, and captured for orders
not fulfilled yet, per store-local day, per store and in total (per currency).

A day is the store's own local day (a store counts days in its time zone), so each fact is dated
with `AT TIME ZONE` the store's zone before it is compared with the asked range.
"""

from datetime import date, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o.errors import InvalidInput
from o2o.i18n import gettext as _
from o2o.payments import commissions

MAX_DAYS = 366

# One row per money fact, dated in its store's local day.
_FACTS = """
WITH facts AS (
    SELECT o.store_id, o.currency,
           (p.captured_at AT TIME ZONE s.timezone)::date AS day,
           p.captured_minor AS captured, 0 AS refunded, 0 AS compensation,
           CASE WHEN o.status NOT IN ('completed', 'cancelled') THEN p.captured_minor ELSE 0 END
               AS outstanding
    FROM payments p JOIN orders o ON o.id = p.order_id JOIN stores s ON s.id = o.store_id
    WHERE p.status = 'captured' AND p.captured_at >= :since AND p.captured_at < :until
  UNION ALL
    SELECT o.store_id, r.currency,
           (r.settled_at AT TIME ZONE s.timezone)::date,
           0, r.amount_minor,
           CASE WHEN r.reason = 'late_delivery' THEN r.amount_minor ELSE 0 END, 0
    FROM refunds r JOIN payments p ON p.id = r.payment_id JOIN orders o ON o.id = p.order_id
    JOIN stores s ON s.id = o.store_id
    WHERE r.status = 'succeeded' AND r.settled_at >= :since AND r.settled_at < :until
),
in_range AS (SELECT * FROM facts WHERE day BETWEEN :from_day AND :to_day)
"""

_SUMS = (
    "sum(captured)::bigint AS captured_minor, sum(refunded)::bigint AS refunded_minor, "
    "sum(compensation)::bigint AS compensation_minor, "
    "sum(outstanding)::bigint AS outstanding_minor"
)


def _rows(session: Session, select_sql: str, params: dict) -> list[dict]:
    return [dict(r._mapping) for r in session.execute(text(_FACTS + select_sql), params)]


def payments_report(session: Session, *, from_day: date, to_day: date) -> dict:
    """Return the reconciliation of [from_day, to_day] (store-local days), per day, per store and
    in total."""
    if to_day < from_day:
        raise InvalidInput(_("`to` is before `from`."), code="invalid_range")
    if (to_day - from_day).days >= MAX_DAYS:
        raise InvalidInput(
            _("Ask for at most {MAX_DAYS} days.").format(MAX_DAYS=MAX_DAYS), code="range_too_long"
        )
    params = {
        "from_day": from_day,
        "to_day": to_day,
        # Wide enough for every time zone (UTC-12 to UTC+14); the day filter is exact.
        "since": f"{from_day - timedelta(days=1)}T00:00:00+00:00",
        "until": f"{to_day + timedelta(days=2)}T00:00:00+00:00",
    }
    days = _rows(
        session,
        f"SELECT day AS date, currency, {_SUMS} FROM in_range GROUP BY day, currency "
        "ORDER BY day, currency",
        params,
    )
    stores = _rows(
        session,
        f"SELECT i.store_id, s.name AS store_name, i.currency, {_SUMS} FROM in_range i "
        "JOIN stores s ON s.id = i.store_id GROUP BY i.store_id, s.name, i.currency "
        "ORDER BY i.store_id, i.currency",
        params,
    )
    total = _rows(
        session,
        f"SELECT currency, {_SUMS} FROM in_range GROUP BY currency ORDER BY currency",
        params,
    )
    return {
        "from": from_day,
        "to": to_day,
        "days": days,
        "stores": stores,
        "total": total,
        "pickup_point_commissions": commissions.report_rows(
            session, from_day=from_day, to_day=to_day
        ),
    }


def store_day(session: Session, store_id: int, day: date) -> dict:
    """Return one store's day for its console: online takings, counter takings, refunds, and
    the pay-at-store orders still to collect."""
    params = {
        "store_id": store_id,
        "from_day": day,
        "to_day": day,
        "since": f"{day - timedelta(days=1)}T00:00:00+00:00",
        "until": f"{day + timedelta(days=2)}T00:00:00+00:00",
    }
    sums = session.execute(
        text(
            """
            SELECT
              COALESCE(sum(p.captured_minor) FILTER (WHERE p.method = 'online'), 0) AS online,
              COALESCE(sum(p.captured_minor) FILTER (WHERE p.method = 'at_store'), 0) AS counter
            FROM payments p JOIN orders o ON o.id = p.order_id JOIN stores s ON s.id = o.store_id
            WHERE o.store_id = :store_id AND p.status = 'captured'
              AND p.captured_at >= :since AND p.captured_at < :until
              AND (p.captured_at AT TIME ZONE s.timezone)::date = :from_day
            """
        ),
        params,
    ).one()
    refunds = session.execute(
        text(
            """
            SELECT r.id, o.id AS order_id, r.amount_minor, r.currency, r.reason, r.status,
                   r.requested_at
            FROM refunds r JOIN payments p ON p.id = r.payment_id
            JOIN orders o ON o.id = p.order_id JOIN stores s ON s.id = o.store_id
            WHERE o.store_id = :store_id AND r.requested_at >= :since AND r.requested_at < :until
              AND (r.requested_at AT TIME ZONE s.timezone)::date = :from_day
            ORDER BY r.requested_at, r.id
            """
        ),
        params,
    ).all()
    to_collect = session.execute(
        text(
            """
            SELECT o.id AS order_id, o.status, p.amount_minor, p.currency
            FROM payments p JOIN orders o ON o.id = p.order_id
            WHERE o.store_id = :store_id AND p.method = 'at_store' AND p.status = 'pending'
              AND o.status NOT IN ('completed', 'cancelled')
            ORDER BY o.created_at, o.id
            """
        ),
        params,
    ).all()
    return {
        "online_minor": int(sums.online),
        "counter_minor": int(sums.counter),
        "refunds": [dict(r._mapping) for r in refunds],
        "to_collect": [dict(r._mapping) for r in to_collect],
    }
