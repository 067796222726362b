"""The hindsight reference: the same day planned offline, knowing every order in advance, as a
pickup-and-delivery problem with time windows solved by OR-Tools.

Each delivery the platform policy carried (its store, its door, when it was ready, its
deadline; read from the platform's database after its day) is a pickup at the store, no earlier
than ready, and a delivery at the door by the deadline (from the start of its slot, for a slot
order). The couriers of the plan start where the plan puts them, carry at most
`dispatch_batch_max_parcels` parcels, ride at the stores' modelled speed, spend the hand-over
minutes at each door, and stop at their end of shift. An order the planner cannot bring in time
is left out (a penalty far above any route's length), so the served share is the on-time share.

Tractability: the whole day at once (thousands of nodes) is beyond a few minutes of search, so
the day is planned in blocks of BLOCK_MINUTES of ready time, each block's routes starting where
and when the couriers finished the previous block. Within a block the planner knows every order
before the first is ready; across blocks it is myopic. It is a reference, not a bound: it shows
how far the online dispatcher is from a planner that sees the day coming.
"""

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from dispatch.batching import distance_m
from o2o.config import get_settings
from o2o.simulation.day import DayPlan
from stores.eta import travel_minutes

BLOCK_MINUTES = 60
SECONDS_PER_BLOCK_SEARCH = 10
DROP_PENALTY = 10_000_000  # far above any day's courier-seconds
SPEED_KMH, DETOUR = 18.0, 1.35  # the demo city's modelled courier (every demo store's)


@dataclass(frozen=True)
class Delivery:
    store: tuple[float, float]
    door: tuple[float, float]
    ready: float  # minutes from the day's start
    opens: float  # the delivery window opens (release, or the slot's start)
    due: float


@dataclass
class Summary:
    orders: int
    on_time: int
    courier_minutes: float
    online_courier_minutes: float | None

    @property
    def on_time_rate(self) -> float:
        return self.on_time / self.orders if self.orders else 0.0


_DELIVERIES = text(
    """
    SELECT ST_Y(s.location::geometry) AS s_lat, ST_X(s.location::geometry) AS s_lon,
           ST_Y(o.delivery_location::geometry) AS d_lat, ST_X(o.delivery_location::geometry) AS d_lon,
           -- the parcel exists once ready, and is offered no sooner than its job opened (a
           -- slot's, in time for the slot; a job opened while it was prepared, before)
           GREATEST(o.ready_at,
                    (SELECT min(j.opened_at) FROM dispatch_jobs j WHERE j.order_id = o.id))
               AS ready,
           GREATEST(o.released_at, coalesce(o.delivery_slot_start, o.released_at)) AS opens,
           o.sla_deadline AS due
    FROM orders o JOIN stores s ON s.id = o.store_id
    WHERE o.fulfillment = 'delivery' AND o.sla_deadline IS NOT NULL
      AND EXISTS (SELECT 1 FROM dispatch_jobs j WHERE j.order_id = o.id)
    """
)

# Online courier-minutes: each trip from the claim to its last door.
_ONLINE = text(
    """
    SELECT coalesce(sum(minutes), 0) FROM (
        SELECT EXTRACT(EPOCH FROM max(j.closed_at) - min(j.claimed_at)) / 60.0 AS minutes
        FROM dispatch_jobs j WHERE j.status IN ('delivered', 'failed')
        GROUP BY coalesce(j.batch_id, j.id), j.courier_id
    ) t
    """
)


def _minutes(at: datetime, start: datetime) -> float:
    return (at - start).total_seconds() / 60.0


def load(database_url: str, start: datetime) -> tuple[list[Delivery], float]:
    """Read the platform's deliveries (and its courier-minutes) from the database it ran on."""
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(_DELIVERIES).all()
            online = float(session.scalar(_ONLINE))
    finally:
        engine.dispose()
    return [
        Delivery(
            (r.s_lat, r.s_lon),
            (r.d_lat, r.d_lon),
            _minutes(r.ready, start),
            _minutes(r.opens, start),
            _minutes(r.due, start),
        )
        for r in rows
        if r.ready is not None
    ], online


def _ride_s(a: tuple[float, float], b: tuple[float, float]) -> int:
    return int(round(travel_minutes(distance_m(a, b), DETOUR, SPEED_KMH) * 60))


def _solve_block(
    block: list[Delivery],
    couriers: list[list],  # [position, free_at (min), off_at (min) or None]
    capacity: int,
    handover_s: int,
) -> tuple[int, float]:
    """Plan one block; move the couriers on; return (served on time, courier-minutes)."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    n, v = len(block), len(couriers)
    # Nodes: 0 = the free end (anywhere, no cost), 1..v = couriers' starts, then pickup/delivery
    # pairs.
    points = [None] + [c[0] for c in couriers]
    for d in block:
        points += [d.store, d.door]
    size = len(points)
    matrix = [[0] * size for _ in range(size)]
    for i in range(1, size):
        for j in range(1, size):
            if i != j:
                matrix[i][j] = _ride_s(points[i], points[j])
    service = [0] * size
    for k in range(n):
        service[1 + v + 2 * k + 1] = handover_s

    manager = pywrapcp.RoutingIndexManager(size, v, list(range(1, v + 1)), [0] * v)
    routing = pywrapcp.RoutingModel(manager)

    def transit(i: int, j: int) -> int:
        a, b = manager.IndexToNode(i), manager.IndexToNode(j)
        return matrix[a][b] + service[a]

    cb = routing.RegisterTransitCallback(transit)
    routing.SetArcCostEvaluatorOfAllVehicles(cb)
    horizon = 48 * 3600
    routing.AddDimension(cb, horizon, horizon, False, "time")
    time_dim = routing.GetDimensionOrDie("time")

    def load_cb(i: int) -> int:
        node = manager.IndexToNode(i)
        if node <= v:
            return 0
        return 1 if (node - 1 - v) % 2 == 0 else -1

    demand = routing.RegisterUnaryTransitCallback(load_cb)
    routing.AddDimensionWithVehicleCapacity(demand, 0, [capacity] * v, True, "load")

    for vi, (_, free_at, off_at) in enumerate(couriers):
        start = routing.Start(vi)
        time_dim.CumulVar(start).SetRange(int(free_at * 60), int(free_at * 60))
        if off_at is not None:
            time_dim.CumulVar(routing.End(vi)).SetMax(max(int(off_at * 60), int(free_at * 60)))
    for k, d in enumerate(block):
        p = manager.NodeToIndex(1 + v + 2 * k)
        q = manager.NodeToIndex(1 + v + 2 * k + 1)
        routing.AddPickupAndDelivery(p, q)
        solver = routing.solver()
        solver.Add(routing.VehicleVar(p) == routing.VehicleVar(q))
        solver.Add(time_dim.CumulVar(p) <= time_dim.CumulVar(q))
        time_dim.CumulVar(p).SetMin(int(d.ready * 60))
        # Arrive within [opens, due]: the hand-over ends by the deadline.
        latest = int(d.due * 60) - handover_s
        earliest = min(int(d.opens * 60), latest)
        time_dim.CumulVar(q).SetRange(max(0, earliest), max(0, latest))
        routing.AddDisjunction([p], DROP_PENALTY)
        routing.AddDisjunction([q], DROP_PENALTY)

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = (
        routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    )
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    params.time_limit.seconds = SECONDS_PER_BLOCK_SEARCH
    solution = routing.SolveWithParameters(params)
    if solution is None:
        return 0, 0.0
    served, busy_s = 0, 0
    for vi in range(v):
        index = routing.Start(vi)
        last_node, last_time = manager.IndexToNode(index), solution.Value(time_dim.CumulVar(index))
        first_time = last_time
        moved = False
        while not routing.IsEnd(index):
            node = manager.IndexToNode(index)
            if node > v:
                moved = True
                if (node - 1 - v) % 2 == 1:
                    served += 1
                last_node, last_time = node, solution.Value(time_dim.CumulVar(index))
            index = solution.Value(routing.NextVar(index))
        if moved:
            end_time = last_time + service[last_node]
            busy_s += end_time - first_time
            couriers[vi][0] = points[last_node]
            couriers[vi][1] = end_time / 60.0
    return served, busy_s / 60.0


def plan(day: DayPlan, database_url: str) -> Summary:
    """Plan the platform's deliveries of the day offline, block by block; summarise."""
    settings = get_settings()
    deliveries, online = load(database_url, day.start)
    couriers = [
        [
            c.start,
            0.0,
            _minutes(c.off_at, day.start) if c.off_at is not None else None,
        ]
        for c in day.couriers
    ]
    deliveries.sort(key=lambda d: d.ready)
    served, minutes = 0, 0.0
    blocks = math.ceil(max((d.ready for d in deliveries), default=0) / BLOCK_MINUTES) + 1
    for b in range(blocks):
        block = [d for d in deliveries if b * BLOCK_MINUTES <= d.ready < (b + 1) * BLOCK_MINUTES]
        if not block:
            continue
        start = b * BLOCK_MINUTES
        for c in couriers:
            c[1] = max(c[1], float(start))
        got, busy = _solve_block(
            block,
            couriers,
            settings.dispatch_batch_max_parcels,
            int(settings.sla_handover_minutes * 60),
        )
        served += got
        minutes += busy
    return Summary(len(deliveries), served, minutes, online)


def summary_line(s: Summary) -> str:
    """The hindsight planner's figures beside the policies' lines."""
    online = "-" if s.online_courier_minutes is None else f"{s.online_courier_minutes:.0f}"
    return (
        f"hindsight (OR-Tools, {BLOCK_MINUTES}-min blocks): on-time {s.on_time_rate * 100:.1f}% "
        f"of {s.orders} deliveries, courier-minutes {s.courier_minutes:.0f} "
        f"(platform online: {online})"
    )
