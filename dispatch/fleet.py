"""The fleet around each store, as a wait for a courier: what the promise at search and checkout
adds to a delivery's ETA (written to `store_fleet_load`, which the stores floor reads).

A queue model, per store, over its neighbourhood (the stores and couriers within the dispatch
radius of it, the area its couriers come from and go to):

- jobs ahead: open jobs, and delivery orders released or being prepared (they will need a
  courier before a new order does), in the neighbourhood;
- couriers: those seen lately (a position within COURIER_SEEN_MINUTES) in the neighbourhood
  whose shift does not end within SHIFT_HORIZON_MINUTES, the idle ones (holding no job) among
  them, and those of them who may take the store's jobs;
- courier-minutes per parcel, and the ride to the store: calibrated from the neighbourhood's
  deliveries of the last HISTORY_HOURS (trip = claim to the last door of a batch, shared by its
  parcels) when there are at least MIN_HISTORY of them, else from the store's ETA model.

- arrivals: delivery orders released in the neighbourhood over the last ARRIVAL_WINDOW_MINUTES.
- observed: how long the store's own jobs waited for their claim lately (those claimed within
  OBSERVED_WINDOW_MINUTES, and the age of those still open and not yet past their deadline), on
  average.

A new order's job opens as its preparation ends (a few minutes before, so its courier rides
meanwhile: `dispatch_open_before_ready_minutes`, which the model leaves out, a few minutes
cautious). Idle couriers take the first jobs at once; beyond them the neighbourhood clears jobs
at couriers / minutes-per-parcel a minute, so the new job is claimed after (ahead - idle + 1) /
rate minutes, of which preparation hides some; then the courier rides to the store.

The pool is not first come, first served: within a deadline bucket the nearer store goes first,
a courier's batch takes later parcels of the same store along, and an escalated job jumps the
queue. While orders arrive no faster than the fleet clears them this evens out; when they arrive
faster (an evening storm, couriers going off shift), part of the orders placed during the new
order's wait are served before it, and a model of the backlog alone promised 75 minutes for
deliveries that took over two hours. So beyond the fleet's rate, OVERTAKE_SHARE of the excess
arrivals is counted ahead as well: wait = backlog / rate / (1 - share * (arrivals - rate) / rate),
and no delivery is promised at all once that excess would leave the new order no share of the
fleet.

Two waits come out of it. The promise (search, checkout, and the check as the store starts):
- counts only the couriers who may take the store's jobs (it is their home store, or inside
  their service area): a courier riding past a store outside their area never takes its jobs,
  and a store few areas cover waits longer than its neighbourhood suggests;
- and is never shorter than the store's observed claim wait: a new job waits at least as long
  as the store's jobs are waiting now.
The SLA monitor predicts with the queue model over the whole neighbourhood, without either: its
escalations send jobs across a wider ring, and predicting with the cautious wait flagged four
times as many deliveries on the peak preset, mostly on time anyway, while the couriers sent from
afar made the median later (docs/BENCHMARKS.md). `courier_wait_minutes` is the rule, pure and
unit-tested.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.models import SERVES_STORE_SQL
from o2o import clock
from o2o.config import get_settings
from stores import eta as stores_eta

COURIER_SEEN_MINUTES = 15
# A courier whose shift ends within this long is not counted on for a new order (it would
# reach them after they have gone).
SHIFT_HORIZON_MINUTES = 90
HISTORY_HOURS = 2
# Arrivals are counted over this window: long enough to be steady, short enough to see a storm.
ARRIVAL_WINDOW_MINUTES = 30
# The store's own jobs claimed within this window (and those still open) say how long its jobs
# really wait for a courier.
OBSERVED_WINDOW_MINUTES = 30
# The share of the excess arrivals (beyond the fleet's rate) served before an order already
# waiting. Measured on the storm preset's evening: about a third of the claims skipped an open job
# with an earlier deadline; a half leaves a margin for the batches that ride along.
OVERTAKE_SHARE = 0.5
# A held order starts this much before its courier's turn is due: the estimate is not exact.
JIT_SLACK_MINUTES = 5.0
# Below this share of the fleet left to the queue ahead, the wait is unbounded: no promise.
MIN_SERVICE_SHARE = 0.1
MIN_HISTORY = 10
# With no courier around at all, a delivery cannot be promised: the wait is this long.
NO_COURIER_WAIT_MINUTES = 24 * 60.0
# Where a store has no history: a courier starts this far from the store, and a door lies this
# far from it, on average.
PRIOR_TO_STORE_M = 1500.0
PRIOR_TO_DOOR_M = 2000.0


@dataclass(frozen=True)
class Neighbourhood:
    jobs_ahead: int
    couriers: int
    idle: int
    minutes_per_parcel: float
    ride_to_store_minutes: float
    # Delivery orders released in the neighbourhood a minute, lately.
    arrivals_per_minute: float = 0.0
    # Minutes the store's own jobs lately waited for their claim (claimed within
    # OBSERVED_WINDOW_MINUTES, or still open: their age so far), on average.
    observed_claim_wait: float = 0.0


def queue_minutes(n: Neighbourhood) -> float:
    """Return the minutes until a new order's job is claimed, counted from now."""
    if n.couriers <= 0:
        return NO_COURIER_WAIT_MINUTES
    if n.jobs_ahead < n.idle:
        return 0.0
    rate = n.couriers / max(n.minutes_per_parcel, 1.0)
    excess = max(0.0, n.arrivals_per_minute - rate)
    service_share = 1.0 - OVERTAKE_SHARE * excess / rate
    if service_share < MIN_SERVICE_SHARE:
        return NO_COURIER_WAIT_MINUTES
    return (n.jobs_ahead - n.idle + 1) / rate / service_share


def courier_wait_minutes(n: Neighbourhood, *, prep_minutes: float, observed: bool = True) -> float:
    """Return the minutes a new order, once ready, waits for a courier to reach the store.

    With `observed`, no less than the store's jobs are waiting now (the promise); without, the
    queue model's alone (what the SLA monitor escalates by).
    """
    queue = queue_minutes(n)
    if queue >= NO_COURIER_WAIT_MINUTES:
        return NO_COURIER_WAIT_MINUTES
    floor = n.observed_claim_wait if observed else 0.0
    return max(0.0, queue - prep_minutes, floor) + n.ride_to_store_minutes


def preparation_hold_minutes(n: Neighbourhood, *, prep_minutes: float) -> float:
    """Return how long a new delivery order may wait before preparation and still be ready in time.

    Only while orders arrive faster than the fleet clears them: then the parcel is made ready when
    the queue reaches its job (less JIT_SLACK_MINUTES), not an hour before, and a promise the fleet
    can no longer keep is told to the patient while the store has not yet started on the order.
    """
    rate = n.couriers / max(n.minutes_per_parcel, 1.0) if n.couriers > 0 else 0.0
    if n.arrivals_per_minute <= rate:
        # The fleet keeps up: start at once. A hold then only lets couriers find no parcel
        # ready (holding in every hour cost the storm simulation on-time share and deliveries
        # per courier-hour).
        return 0.0
    queue = queue_minutes(n)
    if queue >= NO_COURIER_WAIT_MINUTES:
        return 0.0
    return max(0.0, queue - prep_minutes - JIT_SLACK_MINUTES)


_NEIGHBOURHOODS = text(
    f"""
    WITH s AS (
        SELECT id, location, prep_minutes, courier_speed_kmh, detour_factor
        FROM stores WHERE is_active AND offers_delivery
    ),
    c AS (
        SELECT c.user_id, c.location, c.home_store_id, c.service_area,
               EXISTS (SELECT 1 FROM dispatch_jobs j WHERE j.courier_id = c.user_id
                       AND j.status IN ('claimed', 'picked_up')) AS busy
        FROM couriers c WHERE c.location_at >= :seen_since AND c.location IS NOT NULL
          AND (c.shift_ends_at IS NULL OR c.shift_ends_at > :shift_horizon)
    ),
    ahead AS (
        SELECT store_id, count(*) AS n FROM (
            SELECT j.store_id FROM dispatch_jobs j
            WHERE j.status = 'open' AND j.opened_at <= :now
              -- a job open while its order is prepared is counted with the order, below
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = j.order_id
                              AND o.status IN ('released', 'preparing'))
            UNION ALL
            SELECT o.store_id FROM orders o
            WHERE o.fulfillment = 'delivery' AND o.status IN ('released', 'preparing')
              AND (o.delivery_slot_start IS NULL OR o.delivery_slot_start <= :soon)
              -- counted until it is ready, its courier found or not: the cautious side (counting
              -- an order claimed while it is prepared no more made the peak later, BENCHMARKS.md)
        ) x GROUP BY store_id
    ),
    arrived AS (
        SELECT o.store_id, count(*) AS n FROM orders o
        WHERE o.fulfillment = 'delivery' AND o.released_at > :arrivals_since
          AND o.released_at <= :now
          AND (o.delivery_slot_start IS NULL OR o.delivery_slot_start <= :soon)
        GROUP BY o.store_id
    ),
    trips AS (
        SELECT j.store_id, count(*) AS parcels,
               EXTRACT(EPOCH FROM max(j.closed_at) - min(j.claimed_at)) / 60.0 AS minutes,
               EXTRACT(EPOCH FROM min(j.picked_up_at) - min(j.claimed_at)) / 60.0 AS to_store
        FROM dispatch_jobs j
        WHERE j.status = 'delivered' AND j.closed_at >= :history_since
        GROUP BY j.store_id, coalesce(j.batch_id, j.id)
    ),
    observed AS (
        SELECT j.store_id,
               avg(EXTRACT(EPOCH FROM coalesce(j.claimed_at, :now) - j.opened_at)) / 60.0
                   AS claim_wait
        FROM dispatch_jobs j
        WHERE j.order_id IS NOT NULL AND j.opened_at <= :now
          -- an open job past its deadline is a breach the monitor handles, not the store's pace
          AND ((j.status = 'open' AND j.deadline > :now) OR j.claimed_at > :observed_since)
        GROUP BY j.store_id
    ),
    history AS (
        SELECT store_id, sum(parcels) AS parcels, sum(minutes) AS minutes,
               sum(to_store) AS to_store, count(*) AS trips
        FROM trips GROUP BY store_id
    )
    SELECT s.id, s.prep_minutes, s.courier_speed_kmh, s.detour_factor,
           (SELECT coalesce(sum(a.n), 0) FROM ahead a JOIN stores t ON t.id = a.store_id
            WHERE ST_DWithin(t.location, s.location, :radius_m)) AS jobs_ahead,
           (SELECT coalesce(sum(a.n), 0) FROM arrived a JOIN stores t ON t.id = a.store_id
            WHERE ST_DWithin(t.location, s.location, :radius_m)) AS arrivals,
           k.couriers, k.idle, k.serving, k.idle_serving,
           h.parcels, h.minutes, h.to_store, h.trips, ob.claim_wait
    FROM s
    LEFT JOIN observed ob ON ob.store_id = s.id
    -- The couriers around the store, and those of them who may take its jobs, in one pass.
    CROSS JOIN LATERAL (
        SELECT count(*) AS couriers, count(*) FILTER (WHERE NOT n.busy) AS idle,
               count(*) FILTER (WHERE n.serves) AS serving,
               count(*) FILTER (WHERE n.serves AND NOT n.busy) AS idle_serving
        FROM (
            SELECT c.busy,
                   {SERVES_STORE_SQL} AS serves
            FROM c WHERE ST_DWithin(c.location, s.location, :radius_m)
        ) n
    ) k
    LEFT JOIN LATERAL (
        SELECT sum(h.parcels) AS parcels, sum(h.minutes) AS minutes,
               sum(h.to_store) AS to_store, sum(h.trips) AS trips
        FROM history h JOIN stores t ON t.id = h.store_id
        WHERE ST_DWithin(t.location, s.location, :radius_m)
    ) h ON true
    """
)


def refresh(session: Session, *, now: datetime | None = None) -> int:
    """Recompute every delivering store's courier wait; return how many stores were written."""
    now = now or clock.now()
    settings = get_settings()
    rows = session.execute(
        _NEIGHBOURHOODS,
        {
            "now": now,
            "soon": now + timedelta(hours=1),
            "seen_since": now - timedelta(minutes=COURIER_SEEN_MINUTES),
            "shift_horizon": now + timedelta(minutes=SHIFT_HORIZON_MINUTES),
            "history_since": now - timedelta(hours=HISTORY_HOURS),
            "arrivals_since": now - timedelta(minutes=ARRIVAL_WINDOW_MINUTES),
            "observed_since": now - timedelta(minutes=OBSERVED_WINDOW_MINUTES),
            "radius_m": settings.dispatch_radius_m,
        },
    ).all()
    values = []
    for r in rows:

        def ride(metres: float, r=r) -> float:
            return stores_eta.travel_minutes(metres, r.detour_factor, r.courier_speed_kmh)

        if r.parcels and r.parcels >= MIN_HISTORY:
            per_parcel = float(r.minutes) / float(r.parcels)
            to_store = float(r.to_store) / float(r.trips)
        else:
            to_store = ride(PRIOR_TO_STORE_M)
            per_parcel = to_store + ride(PRIOR_TO_DOOR_M) + settings.sla_handover_minutes
        n = Neighbourhood(
            int(r.jobs_ahead),
            int(r.couriers),
            int(r.idle),
            per_parcel,
            to_store,
            arrivals_per_minute=int(r.arrivals) / ARRIVAL_WINDOW_MINUTES,
            observed_claim_wait=float(r.claim_wait or 0.0),
        )
        # The promise counts only the couriers who may take the store's jobs; the monitor's
        # escalations follow the whole neighbourhood's queue.
        serving = replace(n, couriers=int(r.serving), idle=int(r.idle_serving))
        wait = courier_wait_minutes(serving, prep_minutes=float(r.prep_minutes))
        queue_wait = courier_wait_minutes(n, prep_minutes=float(r.prep_minutes), observed=False)
        hold = (
            preparation_hold_minutes(n, prep_minutes=float(r.prep_minutes))
            if settings.dispatch_jit_preparation
            else 0.0
        )
        values.append(
            {
                "store_id": r.id,
                "wait": round(min(wait, NO_COURIER_WAIT_MINUTES), 2),
                "queue_wait": round(min(queue_wait, NO_COURIER_WAIT_MINUTES), 2),
                "hold": round(hold, 2),
                "open_jobs": n.jobs_ahead,
                "couriers": serving.couriers,
                "now": now,
            }
        )
    if values:
        session.execute(
            text(
                """
                INSERT INTO store_fleet_load
                    (store_id, courier_wait_minutes, queue_wait_minutes, hold_minutes,
                     open_jobs, couriers, computed_at)
                VALUES (:store_id, :wait, :queue_wait, :hold, :open_jobs, :couriers, :now)
                ON CONFLICT (store_id) DO UPDATE SET
                    courier_wait_minutes = EXCLUDED.courier_wait_minutes,
                    queue_wait_minutes = EXCLUDED.queue_wait_minutes,
                    hold_minutes = EXCLUDED.hold_minutes,
                    open_jobs = EXCLUDED.open_jobs, couriers = EXCLUDED.couriers,
                    computed_at = EXCLUDED.computed_at
                """
            ),
            values,
        )
    return len(values)
