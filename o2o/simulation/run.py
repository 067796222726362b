"""Replaying a planned day through the real services on an accelerated clock, policy by policy."""

import contextlib
import heapq
import itertools
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dispatch import actions, couriers, fleet, monitor, pool, reports, trips
from dispatch.actions import WrongDeliveryCode
from dispatch.eta import EtaModel
from dispatch.models import SlaBreach, SlaEscalation
from dispatch.pool import Ranking
from o2o import clock
from o2o.config import get_settings
from o2o.db import session_scope
from o2o.errors import DomainError
from o2o.geo import EARTH_RADIUS_M, LatLon, to_latlon
from o2o.order_flow import store_actions
from o2o.order_flow.checkout import place_order
from o2o.order_flow.schemas import DeliveryAddressIn, DeliverySlotIn, OrderIn, OrderItemIn
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.payments import dev_app
from o2o.simulation import city, measure
from o2o.simulation.city import fast_users
from o2o.simulation.day import LOCAL, DayPlan, Options, PlannedCourier, PlannedOrder, plan_day
from o2o.users import service as users_service
from o2o.users.models import Role, User
from prescriptions import doctor_keys, signing
from prescriptions import issuing as rx_issuing
from prescriptions import requests as rx_requests
from prescriptions import review as rx_review
from prescriptions.schemas import (
    PrescribedItemIn,
    PrescriptionRequestIn,
    ReviewIn,
    SigningPayloadIn,
)
from stores import demo as stores_demo
from stores.models import Product, Store


@dataclass(frozen=True)
class Policy:
    """How the platform runs the day: the pool's ranking, batched trips, the fleet-aware promise."""

    ranking: Ranking
    batching: bool = False
    promise: bool = False
    # A delivery's job opens while its order is prepared (`dispatch_open_before_ready_minutes`
    # before it is due ready), so its courier rides to the store meanwhile; else at ready.
    early_jobs: bool = False


POLICIES = {
    # First come, first served, one order a trip, the two-hour promise whatever the backlog.
    "fifo": Policy(Ranking.FIFO),
    # Today's ranking (escalated first, deadline buckets, nearest store), one order a trip.
    "ranked": Policy(Ranking.URGENCY),
    # Ranking, batched trips, and a promise that knows the fleet (slots or pickup beyond it).
    "platform": Policy(Ranking.URGENCY, batching=True, promise=True, early_jobs=True),
}
# Simulated minutes the day may overrun (for the last orders) before it stops anyway.
DRAIN_MINUTES = 240
POSITION_EVERY_MIN = 2
COURIER_AREA_KM = 7.0


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle metres between two (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


@contextlib.contextmanager
def _jobs_open_early(early: bool) -> Iterator[None]:
    """Run a policy's day with jobs opening before ready (the settings' lead) or at ready."""
    settings = get_settings()
    lead = settings.dispatch_open_before_ready_minutes
    settings.dispatch_open_before_ready_minutes = lead if early else 0
    try:
        yield
    finally:
        settings.dispatch_open_before_ready_minutes = lead


@dataclass
class CourierState:
    plan: PlannedCourier
    user_id: int
    at: tuple[float, float]
    job_id: uuid.UUID | None = None  # the trip's first job: set while the courier is busy
    order_n: int | None = None
    # The trip in hand: (job id, order id) in drop order, and the drops not yet made.
    trip: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)

    def on_shift(self, now: datetime) -> bool:
        return self.plan.off_at is None or now < self.plan.off_at

    # The leg being ridden: from, to, departure, arrival.
    leg: tuple[tuple[float, float], tuple[float, float], datetime, datetime] | None = None

    def position(self, now: datetime) -> tuple[float, float]:
        if self.leg is None:
            return self.at
        origin, target, left, arrives = self.leg
        span = (arrives - left).total_seconds()
        share = 1.0 if span <= 0 else min(1.0, max(0.0, (now - left).total_seconds() / span))
        return (
            origin[0] + (target[0] - origin[0]) * share,
            origin[1] + (target[1] - origin[1]) * share,
        )


@dataclass
class DayResult:
    policy: str
    placed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    rx_orders: int = 0
    rx_rejected: int = 0
    claims: int = 0
    claims_lost: int = 0  # claims returned to the pool before the courier got to the store
    failed_attempts: int = 0
    wrong_codes: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    at_risk: int = 0
    breaches: int = 0
    compensation_minor: int = 0
    undelivered: int = 0
    wall_s: float = 0.0
    asked_delivery: int = 0  # orders placed asking for delivery now
    counter_waits: int = 0  # courier-minutes waited at a counter for a parcel being prepared
    diverted_slot: int = 0  # ... placed for a later delivery slot instead
    diverted_pickup: int = 0  # ... placed for pickup instead
    collected: int = 0  # pickups handed over at the counter
    trips: int = 0
    parcels: int = 0
    # The policy line's figures (o2o.simulation.report.measure).
    line: dict[str, Any] = field(default_factory=dict)


class Day:
    """One replay of a plan under one dispatch policy."""

    def __init__(self, plan: DayPlan, policy: str, on_minute: Callable[[], None]) -> None:
        self.plan = plan
        self.policy = policy
        self.rules = POLICIES[policy]
        self.ranking = self.rules.ranking
        self.on_minute = on_minute
        self.result = DayResult(policy)
        self.now = plan.start
        self.rng = random.Random(plan.options.seed + 1)
        self.queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.orders: dict[uuid.UUID, PlannedOrder] = {}
        self.open_orders: set[uuid.UUID] = set()
        self.couriers: list[CourierState] = []
        self.pickups: set[uuid.UUID] = set()  # orders diverted to pickup
        # False once a poll found the board empty, until something can open a job again (an
        # order made ready, a failed attempt, a claim swept back): idle apps skip the request.
        self.board_may_have_jobs = False

    # -- the event queue ------------------------------------------------------------------------

    def at(self, when: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), action))

    def after(self, minutes: float, action: Callable[[], None]) -> None:
        self.at(self.now + timedelta(minutes=minutes), action)

    def run(self) -> DayResult:
        started = time.perf_counter()
        with clock.use(lambda: self.now), _jobs_open_early(self.rules.early_jobs):
            self._setup()
            for order in self.plan.orders:
                self.at(order.at, _bind(self._place, order))
            self.at(self.plan.start, self._minute)
            stop = self.plan.end + timedelta(minutes=DRAIN_MINUTES)
            while self.queue:
                when, _, action = heapq.heappop(self.queue)
                if when > stop:
                    break
                self.now = when
                action()
            self._report()
        self.result.wall_s = round(time.perf_counter() - started, 1)
        return self.result

    # -- setup ----------------------------------------------------------------------------------

    def _setup(self) -> None:
        with session_scope() as session:
            city.reset_day(session)
        with session_scope() as session:
            # The demo city (as `python -m o2o demo-data` loads it): created on the first run,
            # and its stock pushed again on every run, so each day starts from the same shelves.
            stores_demo.load_demo_city(session, today=self.plan.start.astimezone(LOCAL).date())
            dev_app.register(session, webhook_url="http://127.0.0.1:8765/hooks")
        with session_scope() as session:
            self.stores = {s.id: s for s in session.scalars(select(Store))}
            for store in self.stores.values():
                session.expunge(store)
            self.gtins = dict(session.execute(select(Product.gtin, Product.id)).all())
            (admin_id,) = fast_users(session, Role.ADMIN, 1)
            self.patients = fast_users(session, Role.PATIENT, max(20, len(self.plan.orders) // 3))
            self.pharmacists = {}
            for store_id in self.stores:
                (pharmacist,) = fast_users(session, Role.PHARMACIST, 1, tag=f"store{store_id}")
                users_service.link_stores(session, session.get(User, pharmacist), [store_id])
                self.pharmacists[store_id] = pharmacist
            self.doctor_keys = []
            for doctor_id in fast_users(session, Role.DOCTOR, self.plan.options.doctors):
                private = signing.generate_private_key()
                doctor = session.get(User, doctor_id)
                key = doctor_keys.register_key(session, doctor, signing.public_key_b64(private))
                proof = signing.sign(private, key.proof_challenge)
                doctor_keys.prove_key(session, doctor, key.id, signing.b64encode(proof))
                doctor_keys.approve_key(session, session.get(User, admin_id), key.id)
                self.doctor_keys.append((doctor_id, private))
            courier_ids = fast_users(session, Role.COURIER, len(self.plan.couriers))
            for planned, user_id in zip(self.plan.couriers, courier_ids, strict=True):
                lat, lon = planned.home
                couriers.set_courier_area(
                    session,
                    user_id,
                    home_store_id=None,
                    service_area=stores_demo.zone_around(lat, lon, COURIER_AREA_KM),
                )
                couriers.record_position(session, user_id, *planned.start, now=self.now)
                if planned.off_at is not None:
                    # The courier's app says when the shift ends (the promise plans for it).
                    couriers.set_shift_end(session, session.get(User, user_id), planned.off_at)
                self.couriers.append(CourierState(planned, user_id, planned.start))

    # -- patients, doctors, pharmacists ---------------------------------------------------------

    def _body(self, planned: PlannedOrder, fulfillment: str, slot: dict | None = None) -> OrderIn:
        lat, lon = planned.dropoff
        return OrderIn(
            items=[
                OrderItemIn(product_id=self.gtins[gtin], quantity=quantity)
                for gtin, quantity in planned.items
            ],
            location=LatLon(lat=lat, lon=lon),
            fulfillment=fulfillment,
            delivery_address=DeliveryAddressIn(
                location=LatLon(lat=lat, lon=lon), text=f"Flat {planned.n % 40 + 1}, demo street"
            ),
            delivery_slot=(
                DeliverySlotIn(start=slot["start"], end=slot["end"]) if slot is not None else None
            ),
        )

    def _try_place(self, planned: PlannedOrder, body: OrderIn) -> uuid.UUID:
        with session_scope() as session:
            patient = session.get(User, self.patients[planned.patient])
            order = place_order(session, patient, body, now=self.now)
            dev_app.pay(session, order)  # paid at once, through a signed captured event
            return order.id

    def _place(self, planned: PlannedOrder) -> None:
        """The patient asks for delivery; told it cannot be made, takes the slot offered, or
        else collects the order (the two ways an order is diverted, under every policy: without
        the fleet-aware promise only stock and zones refuse a delivery)."""
        self.result.asked_delivery += 1
        try:
            order_id = self._try_place(planned, self._body(planned, "delivery"))
        except DomainError as exc:
            slot = (
                (exc.details or {}).get("earliest_slot") if isinstance(exc.details, dict) else None
            )
            if exc.code != "delivery_unavailable":
                self.result.refused[exc.code] = self.result.refused.get(exc.code, 0) + 1
                return
            order_id = self._divert(planned, slot)
            if order_id is None:
                return
        self.result.placed += 1
        self.orders[order_id] = planned
        self.open_orders.add(order_id)
        if planned.rx:
            self.result.rx_orders += 1
            self.after(planned.rx_delays_min[0], _bind(self._request_rx, order_id))
        else:
            self.after(planned.staff_delay_min, _bind(self._prepare, order_id))

    def _divert(self, planned: PlannedOrder, slot: dict | None) -> uuid.UUID | None:
        attempts = [("delivery", slot)] if slot is not None else []
        attempts.append(("pickup", None))
        for fulfillment, chosen in attempts:
            try:
                order_id = self._try_place(planned, self._body(planned, fulfillment, chosen))
            except DomainError as exc:
                last = exc.code
                continue
            if fulfillment == "pickup":
                self.result.diverted_pickup += 1
                self.pickups.add(order_id)
            else:
                self.result.diverted_slot += 1
            return order_id
        self.result.refused[last] = self.result.refused.get(last, 0) + 1
        return None

    def _request_rx(self, order_id: uuid.UUID) -> None:
        planned = self.orders[order_id]
        with session_scope() as session:
            patient = session.get(User, self.patients[planned.patient])
            p = rx_requests.request_prescription(
                session,
                patient,
                PrescriptionRequestIn(
                    order_id=order_id,
                    patient_name=f"Patient {planned.patient}",
                    id_number=f"31010119800101{planned.patient:04d}",
                    symptoms="Follow-up of a known condition.",
                    allergies="none",
                    current_medication="none",
                ),
            )
            prescription_id = p.id
        self.after(planned.rx_delays_min[1], _bind(self._doctor_signs, order_id, prescription_id))

    def _doctor_signs(self, order_id: uuid.UUID, prescription_id: uuid.UUID) -> None:
        planned = self.orders[order_id]
        doctors = len(self.doctor_keys)
        # The order's doctor takes the request, or the next one who may claim another.
        for k in range(doctors):
            doctor_id, private = self.doctor_keys[(planned.n + k) % doctors]
            try:
                payload = self._claim_and_prepare(order_id, prescription_id, doctor_id)
            except DomainError as exc:
                if exc.code != "too_many_open_claims":
                    raise
                continue
            self.after(
                planned.rx_delays_min[2],
                _bind(self._doctor_issues, order_id, prescription_id, doctor_id, private, payload),
            )
            return
        # Every doctor holds as many requests as they may: this one waits in the queue.
        self.after(1, _bind(self._doctor_signs, order_id, prescription_id))

    def _claim_and_prepare(self, order_id, prescription_id, doctor_id) -> bytes:
        with session_scope() as session:
            doctor = session.get(User, doctor_id)
            rx_issuing.claim(session, doctor, prescription_id)
            order = session.get(Order, order_id)
            items = [
                PrescribedItemIn(
                    product_id=line.product_id,
                    quantity=line.quantity,
                    dose="as directed",
                    frequency="twice a day",
                    duration_days=5,
                )
                for line in order.lines
                if line.rx_only
            ]
            payload, _, _ = rx_issuing.prepare_signing_payload(
                session, doctor, prescription_id, SigningPayloadIn(items=items)
            )
        return payload

    def _doctor_issues(self, order_id, prescription_id, doctor_id, private, payload) -> None:
        with session_scope() as session:
            rx_issuing.issue(
                session,
                session.get(User, doctor_id),
                prescription_id,
                signing.b64encode(payload),
                signing.b64encode(signing.sign(private, payload)),
            )
        self.after(
            self.orders[order_id].rx_delays_min[3],
            _bind(self._pharmacist_reviews, order_id, prescription_id),
        )

    def _pharmacist_reviews(self, order_id: uuid.UUID, prescription_id: uuid.UUID) -> None:
        try:
            with session_scope() as session:
                order = session.get(Order, order_id)
                pharmacist = session.get(User, self.pharmacists[order.store_id])
                rx_review.review(session, pharmacist, prescription_id, ReviewIn(decision="approve"))
        except DomainError:
            # e.g. no lot lasts the course: the pharmacist rejects; the order is cancelled.
            self.result.rx_rejected += 1
            with session_scope() as session:
                order = session.get(Order, order_id)
                pharmacist = session.get(User, self.pharmacists[order.store_id])
                rx_review.review(
                    session,
                    pharmacist,
                    prescription_id,
                    ReviewIn(decision="reject", reason="Cannot be dispensed from our stock."),
                )
            self.open_orders.discard(order_id)
            return
        self.after(self.orders[order_id].staff_delay_min, _bind(self._prepare, order_id))

    def _prepare(self, order_id: uuid.UUID) -> None:
        with session_scope() as session:
            order = lifecycle.lock_order(session, order_id)
            if order.prepare_from is not None and order.prepare_from > self.now:
                # The board advises a later start (just in time for the courier): the store
                # follows it.
                later = (order.prepare_from - self.now).total_seconds() / 60
                self.after(later, _bind(self._prepare, order_id))
                return
            store_actions.prepare(
                session, order, actor_id=self.pharmacists[order.store_id], now=self.now
            )
            minutes = self.stores[order.store_id].prep_minutes * self.orders[order_id].prep_factor
        self.after(minutes, _bind(self._ready, order_id))

    def _ready(self, order_id: uuid.UUID) -> None:
        with session_scope() as session:
            order = lifecycle.lock_order(session, order_id)
            store_actions.mark_ready(
                session, order, actor_id=self.pharmacists[order.store_id], now=self.now
            )
        if order_id in self.pickups:
            # The patient comes by to collect it (told it is ready).
            self.after(self.rng.uniform(10, 40), _bind(self._collect, order_id))
            return
        self.board_may_have_jobs = True

    def _collect(self, order_id: uuid.UUID) -> None:
        with session_scope() as session:
            order = lifecycle.lock_order(session, order_id)
            store_actions.handover(
                session, order, order.pickup_code, actor_id=self.pharmacists[order.store_id]
            )
        self.result.collected += 1
        self.open_orders.discard(order_id)

    # -- the clock's minute: monitor, sweep, positions, couriers polling -------------------------

    def _minute(self) -> None:
        minute = round((self.now - self.plan.start).total_seconds() / 60)
        if minute % POSITION_EVERY_MIN == 0:
            # Every courier on shift (or still finishing a trip) reports where they are.
            with session_scope() as session:
                couriers.record_positions(
                    session,
                    [
                        (c.user_id, *c.position(self.now))
                        for c in self.couriers
                        if c.on_shift(self.now) or c.job_id is not None
                    ],
                    now=self.now,
                )
        with session_scope() as session:
            if self.rules.promise:
                fleet.refresh(session, now=self.now)
            result = monitor.run(session, now=self.now)
            if actions.return_stale_claims(session, now=self.now):
                self.board_may_have_jobs = True
        self.result.at_risk += result.at_risk
        # Each idle courier's app refreshes the board once a minute, at its own second.
        for c in self.couriers:
            if c.job_id is None and c.on_shift(self.now):
                self.after(c.plan.poll_offset_s / 60, _bind(self._poll, c))
        self.on_minute()
        if self.now < self.plan.end or self.open_orders:
            self.after(1, self._minute)

    def _poll(self, c: CourierState) -> None:
        if c.job_id is not None or not self.board_may_have_jobs:
            return
        with session_scope() as session:
            any_open = session.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM dispatch_jobs WHERE status = 'open' "
                    "AND opened_at <= :now)"
                ),
                {"now": self.now},
            )
            if not any_open:
                self.board_may_have_jobs = self._slot_jobs_waiting(session)
                return
            courier = session.get(User, c.user_id)
            lat, lon = c.position(self.now)
            if self.rules.batching:
                jobs = trips.claim_trip(
                    session, courier, lat=lat, lon=lon, now=self.now, ranking=self.ranking
                )
            else:
                job = pool.claim_next_job(
                    session, courier, lat=lat, lon=lon, now=self.now, ranking=self.ranking
                )
                jobs = [job] if job is not None else []
            if not jobs:
                return
            trip = [(job.id, job.order_id) for job in jobs]
            store_id = jobs[0].store_id
        c.at, c.leg = (lat, lon), None  # stops riding home to take the job
        self.result.claims += len(trip)
        self._ride_to_store(c, trip, store_id)

    def _slot_jobs_waiting(self, session: Session) -> bool:
        """Whether a job waits off the board for its slot (the board fills again by itself)."""
        return bool(
            session.scalar(
                text("SELECT EXISTS (SELECT 1 FROM dispatch_jobs WHERE status = 'open')")
            )
        )

    def _ride_to_store(self, c, trip, store_id) -> None:
        store = self.stores[store_id]
        target = _latlon(store)
        minutes = self._ride_minutes(c, store, c.at, target, 1.0)
        c.job_id, c.order_n = trip[0][0], self.orders[trip[0][1]].n
        c.trip = list(trip)
        c.leg = (c.at, target, self.now, self.now + timedelta(minutes=minutes))
        self.after(minutes, _bind(self._at_store, c, store_id))

    def _ride_minutes(self, c, store, origin, target, factor: float) -> float:
        eta = EtaModel.for_store(store)
        leg_noise = self.rng.uniform(0.9, 1.15)
        return (
            eta.travel_minutes(distance_m(origin, target))
            * factor
            * leg_noise
            / c.plan.speed_factor
        )

    def _at_store(self, c: CourierState, store_id: int) -> None:
        if c.leg is not None:
            c.at, c.leg = c.leg[1], None
        with session_scope() as session:
            preparing = session.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM orders WHERE id = ANY(:ids) "
                    "AND status = 'preparing')"
                ),
                {"ids": [order_id for _, order_id in c.trip]},
            )
        if preparing:
            # Claimed while the store prepares it: the courier waits at the counter.
            self.result.counter_waits += 1
            self.after(1, _bind(self._at_store, c, store_id))
            return
        carried = []
        for job_id, order_id in c.trip:
            try:
                with session_scope() as session:
                    courier = session.get(User, c.user_id)
                    try:
                        actions.pickup(session, courier, job_id, now=self.now)
                    except DomainError:
                        # The claim went stale on the way and returned to the pool: claim it
                        # again at the counter if nobody else has.
                        session.rollback()
                        self.result.claims_lost += 1
                        pool.claim_job(
                            session, courier, job_id, lat=c.at[0], lon=c.at[1], now=self.now
                        )
                        actions.pickup(session, courier, job_id, now=self.now)
            except DomainError:
                continue
            carried.append((job_id, order_id))
        if carried:
            self.result.trips += 1
            self.result.parcels += len(carried)
        c.trip = carried
        self._next_drop(c, store_id)

    def _next_drop(self, c: CourierState, store_id: int) -> None:
        if not c.trip:
            c.job_id = c.order_n = None
            self._ride_home(c)
            return
        job_id, order_id = c.trip[0]
        planned = self.orders[order_id]
        minutes = self._ride_minutes(
            c, self.stores[store_id], c.at, planned.dropoff, planned.ride_factor
        )
        handover = get_settings().sla_handover_minutes * self.rng.uniform(0.5, 1.5)
        c.leg = (c.at, planned.dropoff, self.now, self.now + timedelta(minutes=minutes))
        self.after(minutes + handover, _bind(self._at_door, c, job_id, order_id, store_id))

    def _at_door(self, c: CourierState, job_id, order_id, store_id: int) -> None:
        c.at, c.leg = c.leg[1], None
        c.trip = c.trip[1:]
        planned = self.orders[order_id]
        with session_scope() as session:
            courier = session.get(User, c.user_id)
            job = actions.get_held_job(session, courier, job_id)
            nobody_home = planned.not_home and job.attempt == 1
            if nobody_home:
                actions.fail(session, courier, job_id, "Nobody at the door.", now=self.now)
            else:
                code = session.scalar(select(Order.delivery_code).where(Order.id == order_id))
                if planned.wrong_code_first:
                    try:
                        actions.deliver(session, courier, job_id, "000000", now=self.now)
                    except WrongDeliveryCode:
                        self.result.wrong_codes += 1
                actions.deliver(session, courier, job_id, code, now=self.now)
        if nobody_home:
            self.result.failed_attempts += 1
            self.board_may_have_jobs = True  # the order is ready again: a new job is open
        else:
            self.open_orders.discard(order_id)
        self._next_drop(c, store_id)

    def _ride_home(self, c: CourierState) -> None:
        """Head back towards the home pharmacy to wait (where the next job most likely is)."""
        home = c.plan.home
        if distance_m(c.at, home) < 300:
            return
        store = next(iter(self.stores.values()))
        minutes = self._ride_minutes(c, store, c.at, home, 1.0)
        c.leg = (c.at, home, self.now, self.now + timedelta(minutes=minutes))

    # -- the report -----------------------------------------------------------------------------

    def _report(self) -> None:
        r = self.result
        with session_scope() as session:
            r.stats = reports.delivery_stats(
                session, from_=self.plan.start, to=self.now + timedelta(seconds=1)
            )
            r.breaches = session.scalar(select(func.count()).select_from(SlaBreach))
            r.compensation_minor = int(
                session.scalar(select(func.coalesce(func.sum(SlaBreach.compensation_minor), 0)))
            )
            r.at_risk = session.scalar(select(func.count()).select_from(SlaEscalation))
            r.line = measure.measure(
                session,
                start=self.plan.start,
                end=self.now,
                couriers_on_shift=lambda at: sum(c.on_shift(at) for c in self.couriers),
                asked=r.asked_delivery,
                diverted=r.diverted_slot + r.diverted_pickup,
            )
            r.undelivered = session.scalar(
                select(func.count())
                .select_from(Order)
                .where(
                    Order.status.in_(
                        (
                            OrderStatus.RELEASED,
                            OrderStatus.PREPARING,
                            OrderStatus.READY,
                            OrderStatus.OUT_FOR_DELIVERY,
                        )
                    )
                )
            )


def _bind(fn: Callable, *args) -> Callable[[], None]:
    """Bind arguments now (a lambda in a loop would see the loop's last values)."""
    return lambda: fn(*args)


def _latlon(store: Store) -> tuple[float, float]:
    point = to_latlon(store.location)
    return point["lat"], point["lon"]


def simulate(
    options: Options,
    *,
    policies: tuple[str, ...] = tuple(POLICIES),
    on_progress: Callable[[str, int], None] = lambda policy, minutes: None,
) -> list[DayResult]:
    """Replay one planned day under each dispatch policy, one after the other; return their
    results. `on_progress(policy, minutes)` is told each simulated minute done."""
    plan = plan_day(options)
    return [Day(plan, policy, _minutes_told(policy, on_progress)).run() for policy in policies]


def _minutes_told(policy: str, on_progress: Callable[[str, int], None]) -> Callable[[], None]:
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        on_progress(policy, done)

    return tick
