"""The SLA monitor: predict every open delivery's finish, escalate the ones at risk, record and
compensate the ones breached, and tell the store and the patient through the outbox.

Set-based: three statements over all open deliveries at once, however many there are (a
steady-state run over 100,000 takes one to two seconds, see docs/BENCHMARKS.md), instead of a loop
of per-order queries. The rules
are those of `dispatch.sla` and `dispatch.eta`, written here in SQL; a test checks both agree.

Exactly once: an order enters `sla_escalations` and `sla_breaches` once (primary key / unique
constraint, `ON CONFLICT DO NOTHING`), and its event and compensation come only from the rows
that insert returns. A re-run, or two monitors at once, change nothing twice.

Statement order (orders, then escalations, then jobs) follows the lock order of the courier
paths (order, then job), so the monitor and a courier never deadlock.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch import events, sla
from dispatch.eta import MINUTES_PER_METRE_SQL as _MIN_PER_M
from dispatch.models import SlaBreach
from o2o import clock, outbox
from o2o.config import get_settings
from o2o.orders.models import Order

_OPEN_DELIVERY = (
    "o.fulfillment = 'delivery' "
    "AND o.status IN ('released', 'preparing', 'ready', 'out_for_delivery')"
)
_LIVE_JOB = "j.status IN ('open', 'claimed', 'picked_up', 'locked')"


@dataclass(frozen=True)
class MonitorResult:
    at_risk: int
    breached: int
    jobs_escalated: int


def _compensation_sql(policy: str) -> str:
    """The compensation rule of `sla.compensation_minor` as SQL over an order row `o`."""
    total = "(o.subtotal_minor + o.delivery_fee_minor)"
    if policy == "waive_delivery_fee":
        return f"LEAST(o.delivery_fee_minor, {total})"
    if policy == "fixed":
        return f"LEAST(CAST(:fixed_minor AS integer), {total})"
    if policy == "none":
        return "0"
    raise ValueError(f"unknown compensation policy {policy!r}")


# Why a delivery missed its deadline, by the phase it was in when the deadline passed (from the
# order's and its live job's state): not prepared, no courier, not collected, or in transit.
_REASON_SQL = """
    CASE
      WHEN o.status IN ('released', 'preparing') THEN 'not_prepared'
      WHEN o.status = 'out_for_delivery' THEN 'in_transit'
      WHEN j.status = 'claimed' THEN 'not_collected'
      ELSE 'no_courier'
    END
"""

# Minutes of preparation left (counted from the advised start, or the release), and the claimed
# courier's ride to the store (the wait for one where their position is unknown).
_PREP_LEFT = """(s.prep_minutes - EXTRACT(EPOCH FROM (
    :now - GREATEST(o.released_at, COALESCE(o.prepare_from, o.released_at)))) / 60.0)"""
_COURIER_TO_STORE = (
    f"COALESCE(ST_Distance(c.location, s.location, false) * {_MIN_PER_M}, w.wait_min)"
)

# Minutes until the order's job opens, when the wait for a courier starts: its live job's opening
# (later than now for a slot order ready early), else for a slot order the opening its slot will
# give it (`actions.new_job`: the usual wait and the ride before the slot starts; the ride here
# to the exact drop-off on the sphere, there to its grid cell, under a minute apart), else none.
_UNTIL_JOB_OPENS = f"""CASE
      WHEN j.id IS NOT NULL THEN EXTRACT(EPOCH FROM (j.opened_at - :now)) / 60.0
      WHEN o.delivery_slot_start IS NOT NULL THEN
        EXTRACT(EPOCH FROM (o.delivery_slot_start - :now)) / 60.0
        - :wait_min - d.store_to_dropoff_m * {_MIN_PER_M}
      ELSE 0
    END"""

# `sla.remaining_minutes`, phase by phase. Distances on the sphere (use_spheroid => false): an
# estimate needs no millimetres, and the sphere is several times cheaper over 100,000 rows.
_REMAINING_SQL = f"""
    CASE
      WHEN o.status = 'released' THEN
        GREATEST(s.prep_minutes, {_UNTIL_JOB_OPENS})
        + w.wait_min + d.store_to_dropoff_m * {_MIN_PER_M}
      WHEN o.status = 'preparing' AND j.status = 'claimed' THEN
        GREATEST({_PREP_LEFT}, {_COURIER_TO_STORE}) + d.store_to_dropoff_m * {_MIN_PER_M}
      WHEN o.status = 'preparing' THEN
        GREATEST(0, {_PREP_LEFT}, {_UNTIL_JOB_OPENS})
        + w.wait_min + d.store_to_dropoff_m * {_MIN_PER_M}
      WHEN o.status = 'ready' AND j.status = 'claimed' THEN
        {_COURIER_TO_STORE}
        + d.store_to_dropoff_m * {_MIN_PER_M}
      WHEN o.status = 'ready' THEN
        GREATEST(0, {_UNTIL_JOB_OPENS})
        + w.wait_min + d.store_to_dropoff_m * {_MIN_PER_M}
      ELSE
        COALESCE(
          ST_Distance(c.location, o.delivery_location, false) * {_MIN_PER_M},
          GREATEST(
            0,
            d.store_to_dropoff_m * {_MIN_PER_M}
            - EXTRACT(EPOCH FROM (:now - COALESCE(j.picked_up_at, :now))) / 60.0
          )
        )
    END + :handover_min
"""

_BREACH_SQL = """
WITH late AS (
    SELECT o.id AS order_id, o.store_id, o.patient_id, o.sla_deadline AS deadline, o.currency,
           {reason} AS reason, {compensation} AS compensation_minor
    FROM orders o
    LEFT JOIN dispatch_jobs j ON j.order_id = o.id AND {live_job}
    WHERE {open_delivery} AND o.sla_deadline < :now
      AND NOT EXISTS (SELECT 1 FROM sla_breaches b WHERE b.order_id = o.id)
),
recorded AS (
    INSERT INTO sla_breaches
        (order_id, store_id, deadline, detected_at, reason, compensation_minor, currency)
    SELECT order_id, store_id, deadline, :now, reason, compensation_minor, currency FROM late
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
),
compensated AS (
    UPDATE orders o SET compensation_minor = GREATEST(o.compensation_minor, l.compensation_minor)
    FROM recorded r JOIN late l ON l.order_id = r.order_id
    WHERE o.id = r.order_id
    RETURNING o.id, o.compensation_minor
),
told AS (
    INSERT INTO outbox_events (id, event_type, aggregate_type, aggregate_id, payload)
    SELECT gen_random_uuid(), 'order.sla_breached', 'order', l.order_id::text,
           jsonb_build_object(
               'order_id', l.order_id, 'store_id', l.store_id, 'patient_id', l.patient_id,
               'deadline', l.deadline, 'reason', l.reason,
               'compensation_minor', l.compensation_minor, 'currency', l.currency,
               'at', CAST(:now AS timestamptz))
    FROM recorded r JOIN late l ON l.order_id = r.order_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM recorded) AS breached, (SELECT count(*) FROM compensated) AS paid,
       (SELECT COALESCE(jsonb_agg(jsonb_build_array(id, compensation_minor)), '[]'::jsonb)
        FROM compensated) AS compensated
"""

# Open deliveries with their predicted finish (the statements below narrow the set).
_PREDICTED_SQL = """
    SELECT o.id AS order_id, o.store_id, o.sla_deadline AS deadline,
           CAST(:now AS timestamptz) + make_interval(secs => 60.0 * ({remaining}))
               AS predicted_finish
    FROM orders o
    JOIN stores s ON s.id = o.store_id
    CROSS JOIN LATERAL (
        SELECT ST_Distance(s.location, o.delivery_location, false) AS store_to_dropoff_m
    ) d
    -- The wait for a courier: the fleet's current estimate around the store where one is fresh
    -- (dispatch.fleet), else the configured assumption.
    CROSS JOIN LATERAL (
        SELECT COALESCE(
            (SELECT {fleet_wait} FROM store_fleet_load fl
             WHERE fl.store_id = o.store_id AND fl.computed_at >= :fleet_since),
            :wait_min) AS wait_min
    ) w
    LEFT JOIN dispatch_jobs j ON j.order_id = o.id AND {live_job}
    LEFT JOIN couriers c
        ON c.user_id = j.courier_id AND j.status IN ('claimed', 'picked_up', 'locked')
    WHERE {open_delivery}
"""

_AT_RISK_SQL = """
WITH open_deliveries AS (
    {predicted}
      {only}
      AND o.sla_deadline >= :now
      AND NOT EXISTS (SELECT 1 FROM sla_escalations e WHERE e.order_id = o.id)
),
flagged AS (
    INSERT INTO sla_escalations (order_id, store_id, deadline, predicted_finish, escalated_at)
    SELECT order_id, store_id, deadline, predicted_finish, :now FROM open_deliveries
    WHERE predicted_finish > deadline - :margin
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, store_id, deadline, predicted_finish
),
told AS (
    INSERT INTO outbox_events (id, event_type, aggregate_type, aggregate_id, payload)
    SELECT gen_random_uuid(), 'order.sla_at_risk', 'order', f.order_id::text,
           jsonb_build_object(
               'order_id', f.order_id, 'store_id', f.store_id, 'deadline', f.deadline,
               'predicted_finish', f.predicted_finish, 'at', CAST(:now AS timestamptz))
    FROM flagged f
    RETURNING 1
)
SELECT count(*) FROM flagged
"""

# Escalated orders' live jobs go up in priority (and so reach couriers further away) once their
# finish is predicted within the monitor's margin of the deadline: when they were flagged, or now.
# An order flagged by the wider check made as the store starts (the patient told early, the
# predicted finish still well before the deadline) keeps its place until then: raising every such
# job sent couriers riding across the wide ring for parcels that were not late, and the claims
# they lost to the stale sweep made the peak later (docs/BENCHMARKS.md). Read from the live jobs,
# and predicted again only for the jobs told early and not raised yet, so the history is never
# scanned.
_ESCALATE_JOBS_SQL = """
WITH flagged AS (
    {predicted}
      AND j.priority < {at_risk}
      AND EXISTS (SELECT 1 FROM sla_escalations e WHERE e.order_id = o.id
                    AND e.predicted_finish <= e.deadline - :margin)
)
UPDATE dispatch_jobs j SET priority = x.priority
FROM (
    SELECT j.id,
           CASE
             WHEN EXISTS (SELECT 1 FROM sla_breaches b WHERE b.order_id = j.order_id)
               THEN {breached}
             WHEN EXISTS (SELECT 1 FROM sla_escalations e WHERE e.order_id = j.order_id
                            AND e.predicted_finish > e.deadline - :margin)
                  OR EXISTS (SELECT 1 FROM flagged f WHERE f.order_id = j.order_id
                               AND f.predicted_finish > f.deadline - :margin)
               THEN {at_risk}
             ELSE {normal}
           END AS priority
    FROM dispatch_jobs j WHERE {live_job}
) x
WHERE j.id = x.id AND j.priority < x.priority
"""


# The wait the monitor predicts with: the fleet's queue model (dispatch.fleet). The check made as
# the store starts (or after a failed attempt) predicts with the promised wait, which also counts
# how long the store's jobs are waiting now: it tells the patient, and should rather tell too
# early than too late.
_QUEUE_WAIT = "COALESCE(fl.queue_wait_minutes, fl.courier_wait_minutes)"
_PROMISED_WAIT = "fl.courier_wait_minutes"


def _predicted_sql(fleet_wait: str = _QUEUE_WAIT) -> str:
    return _PREDICTED_SQL.format(
        remaining=_REMAINING_SQL,
        live_job=_LIVE_JOB,
        open_delivery=_OPEN_DELIVERY,
        fleet_wait=fleet_wait,
    )


def _params(now: datetime) -> dict:
    settings = get_settings()
    return {
        "now": now,
        "fixed_minor": settings.sla_compensation_fixed_minor,
        "wait_min": float(settings.sla_courier_wait_minutes),
        "fleet_since": now - timedelta(minutes=settings.fleet_load_max_age_minutes),
        "handover_min": float(settings.sla_handover_minutes),
        "margin": timedelta(minutes=settings.sla_risk_margin_minutes),
    }


def predict(session: Session, *, now: datetime | None = None) -> dict:
    """Return {order_id: predicted finish} for every open delivery (read-only)."""
    now = now or clock.now()
    rows = session.execute(text(_predicted_sql()), _params(now)).all()
    return {row.order_id: row.predicted_finish for row in rows}


def run(session: Session, *, now: datetime | None = None) -> MonitorResult:
    """Check every open delivery once: record breaches, escalate the ones at risk."""
    settings = get_settings()
    now = now or clock.now()
    params = _params(now)
    breached = session.execute(
        text(
            _BREACH_SQL.format(
                reason=_REASON_SQL,
                compensation=_compensation_sql(settings.sla_compensation),
                live_job=_LIVE_JOB,
                open_delivery=_OPEN_DELIVERY,
            )
        ),
        params,
    ).one()
    for order_id, compensation in breached.compensated:
        events.sla_breached.send(session, uuid.UUID(order_id), int(compensation))
    at_risk = session.execute(
        text(_AT_RISK_SQL.format(predicted=_predicted_sql(), only="")),
        params,
    ).scalar_one()
    escalated = session.execute(
        text(
            _ESCALATE_JOBS_SQL.format(
                predicted=_predicted_sql(),
                breached=sla.PRIORITY_BREACHED,
                at_risk=sla.PRIORITY_AT_RISK,
                normal=sla.PRIORITY_NORMAL,
                live_job=_LIVE_JOB,
            )
        ),
        params,
    ).rowcount
    session.expire_all()
    return MonitorResult(at_risk=at_risk, breached=breached.breached, jobs_escalated=escalated)


def check_promise(session: Session, order: Order, *, now: datetime | None = None) -> bool:
    """Tell the patient now if the fleet can no longer keep this delivery's promise.

    Run at the last moments the patient can hear of a changed promise before work is spent on
    the order: as the store starts on it (`dispatch.service.before_preparing`), not a minute
    after; and as a courier hands it back from a door nobody answered (`dispatch.actions.fail`),
    before it goes out again. The monitor's rule and once-only record (an order the monitor
    flagged already is not flagged twice), with the wider margin of
    `sla_risk_margin_before_preparing_minutes` (at most half the window for a slot order): a
    finish predicted that close to the deadline is told, rather too early than too late, as the
    monitor's own margin would tell it only once the parcel is on its way again. Returns whether
    the order was flagged now.
    """
    if order.fulfillment.value != "delivery" or order.sla_deadline is None:
        return False
    now = now or clock.now()
    margin = timedelta(minutes=get_settings().sla_risk_margin_before_preparing_minutes)
    if order.delivery_slot_start is not None and order.delivery_slot_end is not None:
        # A slot's promise is its window: a parcel due in its first half is on time, not at risk.
        margin = min(margin, (order.delivery_slot_end - order.delivery_slot_start) / 2)
    flagged = session.execute(
        text(
            _AT_RISK_SQL.format(
                predicted=_predicted_sql(_PROMISED_WAIT), only="AND o.id = :order_id"
            )
        ),
        _params(now) | {"order_id": order.id, "margin": margin},
    ).scalar_one()
    # No job to raise: the order's next job opens after this check, with the priority its
    # escalation gives it (`actions.new_job`).
    return bool(flagged)


def record_late_delivery(session: Session, order: Order, *, now: datetime) -> bool:
    """Record a delivery handed over after its deadline (once), compensate and tell the patient.

    The monitor catches open orders past their deadline; this catches one delivered between two
    runs of it. Returns whether a breach was recorded now.
    """
    settings = get_settings()
    amount = sla.compensation_minor(
        settings.sla_compensation,
        delivery_fee_minor=order.delivery_fee_minor,
        subtotal_minor=order.subtotal_minor,
        fixed_minor=settings.sla_compensation_fixed_minor,
    )
    inserted = session.execute(
        pg_insert(SlaBreach)
        .values(
            order_id=order.id,
            store_id=order.store_id,
            deadline=order.sla_deadline,
            detected_at=now,
            reason=sla.LATE_DELIVERY,
            compensation_minor=amount,
            currency=order.currency,
        )
        .on_conflict_do_nothing(constraint="uq_sla_breaches_order_id")
        .returning(SlaBreach.id)
    ).scalar_one_or_none()
    if inserted is None:
        return False
    order.compensation_minor = max(order.compensation_minor, amount)
    events.sla_breached.send(session, order.id, order.compensation_minor)
    outbox.emit(
        session,
        "order.sla_breached",
        "order",
        order.id,
        {
            "order_id": str(order.id),
            "store_id": order.store_id,
            "patient_id": order.patient_id,
            "deadline": order.sla_deadline.isoformat(),
            "reason": sla.LATE_DELIVERY,
            "compensation_minor": amount,
            "currency": order.currency,
            "at": now.isoformat(),
        },
    )
    session.flush()
    return True
