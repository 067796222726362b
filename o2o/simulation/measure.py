"""The figures of a policy's day, read from the database the day ran on (SQL, after the day).

On time means handed over by the promise the order was given: its SLA deadline (two hours from
release, or the end of the slot the patient took). Minutes run from the start of that promise
(release, or the slot's start) to the door. Deliveries per courier-hour are those of the busiest
clock hour of the day over the couriers on shift in it.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

_DELIVERIES = text(
    """
    SELECT count(*) AS delivered,
           count(*) FILTER (WHERE o.completed_at <= o.sla_deadline) AS on_time,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY m.minutes) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY m.minutes) AS p95
    FROM orders o
    CROSS JOIN LATERAL (
        SELECT EXTRACT(EPOCH FROM (o.completed_at
            - GREATEST(o.released_at, coalesce(o.delivery_slot_start, o.released_at)))) / 60.0
            AS minutes
    ) m
    WHERE o.fulfillment = 'delivery' AND o.status = 'completed' AND o.released_at IS NOT NULL
    """
)

_BUSIEST_HOUR = text(
    """
    SELECT date_bin('1 hour', o.completed_at, :start) AS hour, count(*) AS n
    FROM orders o WHERE o.fulfillment = 'delivery' AND o.status = 'completed'
    GROUP BY 1 ORDER BY n DESC, hour LIMIT 1
    """
)

# Deliveries broken silently: late (or not delivered by a deadline the replay reached) without
# the patient having been told a changed promise (the at-risk notice) before the store started on
# the order, or, for a parcel a courier brought to the door in time and nobody answered, as it
# was handed back (the first moment anyone could know; the last such attempt before the
# deadline). A promise due after the replay's end (tomorrow's slot, say) is not broken yet.
_SILENT = text(
    """
    SELECT count(*) FROM orders o
    WHERE o.fulfillment = 'delivery' AND o.sla_deadline IS NOT NULL
      AND o.status <> 'cancelled' AND o.sla_deadline <= :end
      AND coalesce(o.completed_at, 'infinity') > o.sla_deadline
      AND NOT EXISTS (
          SELECT 1 FROM sla_escalations e WHERE e.order_id = o.id
            AND e.escalated_at <= GREATEST(
                coalesce((SELECT min(ev.at) FROM order_events ev
                          WHERE ev.order_id = o.id AND ev.to_status = 'preparing'), 'infinity'),
                (SELECT max(j.closed_at) FROM dispatch_jobs j
                 WHERE j.order_id = o.id AND j.status = 'failed'
                   AND j.closed_at <= o.sla_deadline)))
    """
)

# Where a delivery's minutes go, stage by stage (the median of each over the deliveries; medians
# do not add up to the whole's): from the start of the promise until the store starts on it, the
# preparation, the wait from ready until a courier claims the job that delivered it, the
# courier's ride to the store, and from the pickup to the door.
STAGES = (
    ("to the store's start", "s.promised", "s.started"),
    ("preparation", "s.started", "o.ready_at"),
    ("ready to claimed", "o.ready_at", "j.claimed_at"),
    ("ride to the store", "j.claimed_at", "j.picked_up_at"),
    ("pickup to the door", "j.picked_up_at", "o.completed_at"),
)
_STAGES = text(
    "SELECT "
    + ", ".join(
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM ({b} - {a})) / 60.0)"
        for _, a, b in STAGES
    )
    + """
    FROM orders o
    JOIN dispatch_jobs j ON j.order_id = o.id AND j.status = 'delivered'
    CROSS JOIN LATERAL (
        SELECT GREATEST(o.released_at, coalesce(o.delivery_slot_start, o.released_at))
                   AS promised,
               (SELECT min(e.at) FROM order_events e
                WHERE e.order_id = o.id AND e.to_status = 'preparing') AS started
    ) s
    WHERE o.fulfillment = 'delivery' AND o.status = 'completed' AND o.released_at IS NOT NULL
    """
)

_TRIPS = text(
    """
    SELECT count(DISTINCT coalesce(batch_id, id)) AS trips, count(*) AS parcels
    FROM dispatch_jobs WHERE picked_up_at IS NOT NULL
    """
)


def measure(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    couriers_on_shift: Any,
    asked: int,
    diverted: int,
) -> dict[str, Any]:
    """Return the policy line's figures (and a few more) for the day just run (from `start` to
    the replay's last moment, `end`)."""
    row = session.execute(_DELIVERIES).one()
    busiest = session.execute(_BUSIEST_HOUR, {"start": start}).one_or_none()
    per_courier_hour = None
    if busiest is not None:
        on_shift = couriers_on_shift(busiest.hour + timedelta(minutes=30))
        per_courier_hour = busiest.n / on_shift if on_shift else None
    trips = session.execute(_TRIPS).one()
    return {
        "delivered": row.delivered,
        "on_time": row.on_time,
        "on_time_rate": row.on_time / row.delivered if row.delivered else None,
        "p50": float(row.p50) if row.p50 is not None else None,
        "p95": float(row.p95) if row.p95 is not None else None,
        "per_courier_hour": per_courier_hour,
        "mean_batch": trips.parcels / trips.trips if trips.trips else None,
        "diverted": diverted,
        "diverted_share": diverted / asked if asked else 0.0,
        "silent_breaks": session.scalar(_SILENT, {"end": end}),
        "stages": {
            label: float(v) if v is not None else None
            for (label, _, _), v in zip(STAGES, session.execute(_STAGES).one(), strict=True)
        },
    }
