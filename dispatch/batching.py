"""Batched trips: which open jobs of one store a courier takes together, in which drop order.

Pure: plain values in, a plan out, no database (the claim in `dispatch.pool` locks the
candidates and applies the plan). A trip starts with the job the claim picked (the anchor: the
best-ranked one, so batching never overtakes the ranking) and grows by cheapest insertion: each
round, every candidate is tried at every position of the drop order, and the one adding the
fewest minutes is taken if

- the trip holds fewer than `max_parcels` parcels,
- it adds at most `max_detour_minutes` to the trip, and the anchor's door time moves by at most
  that much too (the job that was first in line is never made to wait long for the others),
- every drop of the new trip, at its predicted door time, is still at least
  `deadline_margin_minutes` before its deadline (the SLA monitor's margin: a batch never makes a
  drop at risk). The anchor is held to that only when it meets it alone; closer to its deadline
  alone, a batch-mate may not delay it at all, and late even alone it only bounds the detour.

Door times follow the store's ETA model: travel = straight line x detour factor / speed, plus a
hand-over at each door.
"""

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from o2o.geo import EARTH_RADIUS_M

Point = tuple[float, float]  # (lat, lon)


def distance_m(a: Point, b: Point) -> float:
    """Return great-circle metres between two (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


@dataclass(frozen=True)
class Drop:
    """An open job as the batching sees it."""

    job_id: uuid.UUID
    dropoff: Point
    deadline: datetime


@dataclass(frozen=True)
class Rules:
    max_parcels: int
    max_detour_minutes: float
    handover_minutes: float
    deadline_margin_minutes: float = 0.0


@dataclass(frozen=True)
class PlannedDrop:
    job_id: uuid.UUID
    seq: int  # 1 = the first door
    eta: datetime


def door_times(
    leaves_store: datetime,
    store: Point,
    route: Sequence[Drop],
    travel_minutes: Callable[[float], float],
    handover_minutes: float,
) -> list[datetime]:
    """Return the predicted hand-over time at each door of a route from the store."""
    times, at, t = [], store, 0.0
    for drop in route:
        t += travel_minutes(distance_m(at, drop.dropoff))
        times.append(leaves_store + timedelta(minutes=t))
        t += handover_minutes
        at = drop.dropoff
    return times


def _minutes(route: Sequence[Drop], store: Point, travel: Callable[[float], float], hand: float):
    t, at = 0.0, store
    for drop in route:
        t += travel(distance_m(at, drop.dropoff)) + hand
        at = drop.dropoff
    return t


def plan_trip(
    anchor: Drop,
    candidates: Sequence[Drop],
    *,
    store: Point,
    leaves_store: datetime,
    travel_minutes: Callable[[float], float],
    rules: Rules,
) -> list[PlannedDrop]:
    """Plan one trip from the store: the anchor plus the candidates that fit, in drop order."""
    hand = rules.handover_minutes
    margin = timedelta(minutes=rules.deadline_margin_minutes)
    route = [anchor]
    anchor_alone = door_times(leaves_store, store, route, travel_minutes, hand)[0]
    # An anchor already late alone may still take batch-mates (within the detour bound): the
    # others must all keep the margin, and an anchor that is on time must stay so, with the
    # margin when it has it alone, else no later than alone.
    anchor_on_time = anchor_alone <= anchor.deadline
    anchor_latest = max(anchor.deadline - margin, anchor_alone)
    cost = _minutes(route, store, travel_minutes, hand)
    pool = sorted(
        (c for c in candidates if c.job_id != anchor.job_id), key=lambda c: (c.deadline, c.job_id)
    )
    while len(route) < rules.max_parcels and pool:
        best = None
        for candidate in pool:
            for i in range(len(route) + 1):
                trial = [*route[:i], candidate, *route[i:]]
                added = _minutes(trial, store, travel_minutes, hand) - cost
                if added > rules.max_detour_minutes or (best is not None and added >= best[0]):
                    continue
                times = door_times(leaves_store, store, trial, travel_minutes, hand)
                if any(
                    (t > anchor_latest and anchor_on_time)
                    if d is anchor
                    else t > d.deadline - margin
                    for t, d in zip(times, trial, strict=True)
                ):
                    continue
                anchor_at = times[trial.index(anchor)]
                if (anchor_at - anchor_alone) > timedelta(minutes=rules.max_detour_minutes):
                    continue
                best = (added, trial, candidate)
        if best is None:
            break
        cost += best[0]
        route = best[1]
        pool.remove(best[2])
    times = door_times(leaves_store, store, route, travel_minutes, hand)
    return [
        PlannedDrop(d.job_id, seq, t)
        for seq, (d, t) in enumerate(zip(route, times, strict=True), start=1)
    ]
