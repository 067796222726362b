"""Replaying a planned day through the real services on an accelerated clock, policy by policy."""

import heapq
import itertools
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from dispatch import actions, couriers, monitor, pool, reports
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
from o2o.order_flow.schemas import DeliveryAddressIn, OrderIn, OrderItemIn
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
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

POLICIES = {"ranked": Ranking.URGENCY, "first come, first served": Ranking.FIFO}
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


@dataclass
class CourierState:
    plan: PlannedCourier
    user_id: int
    at: tuple[float, float]
    job_id: uuid.UUID | None = None
    order_n: int | None = None
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


class Day:
    """One replay of a plan under one dispatch policy."""

    def __init__(self, plan: DayPlan, policy: str, on_minute: Callable[[], None]) -> None:
        self.plan = plan
        self.policy = policy
        self.ranking = POLICIES[policy]
        self.on_minute = on_minute
        self.result = DayResult(policy)
        self.now = plan.start
        self.rng = random.Random(plan.options.seed + 1)
        self.queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.orders: dict[uuid.UUID, PlannedOrder] = {}
        self.open_orders: set[uuid.UUID] = set()
        self.couriers: list[CourierState] = []
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
        with clock.use(lambda: self.now):
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
            reset_day(session)
        with session_scope() as session:
            # The demo city (as `python -m o2o demo-data` loads it): created on the first run,
            # and its stock pushed again on every run, so each day starts from the same shelves.
            stores_demo.load_demo_city(session, today=self.plan.start.astimezone(LOCAL).date())
        with session_scope() as session:
            self.stores = {s.id: s for s in session.scalars(select(Store))}
            for store in self.stores.values():
                session.expunge(store)
            self.gtins = dict(session.execute(select(Product.gtin, Product.id)).all())
            (admin_id,) = _fast_users(session, Role.ADMIN, 1)
            self.patients = _fast_users(session, Role.PATIENT, max(20, len(self.plan.orders) // 3))
            self.pharmacists = {}
            for store_id in self.stores:
                (pharmacist,) = _fast_users(session, Role.PHARMACIST, 1, tag=f"store{store_id}")
                users_service.link_stores(session, session.get(User, pharmacist), [store_id])
                self.pharmacists[store_id] = pharmacist
            self.doctor_keys = []
            for doctor_id in _fast_users(session, Role.DOCTOR, self.plan.options.doctors):
                private = signing.generate_private_key()
                doctor = session.get(User, doctor_id)
                key = doctor_keys.register_key(session, doctor, signing.public_key_b64(private))
                doctor_keys.approve_key(session, session.get(User, admin_id), key.id)
                self.doctor_keys.append((doctor_id, private))
            courier_ids = _fast_users(session, Role.COURIER, len(self.plan.couriers))
            for planned, user_id in zip(self.plan.couriers, courier_ids, strict=True):
                lat, lon = planned.home
                couriers.set_courier_area(
                    session,
                    user_id,
                    home_store_id=None,
                    service_area=stores_demo.zone_around(lat, lon, COURIER_AREA_KM),
                )
                couriers.record_position(session, user_id, *planned.start, now=self.now)
                self.couriers.append(CourierState(planned, user_id, planned.start))

    # -- patients, doctors, pharmacists ---------------------------------------------------------

    def _place(self, planned: PlannedOrder) -> None:
        lat, lon = planned.dropoff
        body = OrderIn(
            items=[
                OrderItemIn(product_id=self.gtins[gtin], quantity=quantity)
                for gtin, quantity in planned.items
            ],
            location=LatLon(lat=lat, lon=lon),
            fulfillment="delivery",
            delivery_address=DeliveryAddressIn(
                location=LatLon(lat=lat, lon=lon), text=f"Flat {planned.n % 40 + 1}, demo street"
            ),
        )
        try:
            with session_scope() as session:
                patient = session.get(User, self.patients[planned.patient])
                order = place_order(session, patient, body, now=self.now)
                order_id = order.id
        except DomainError as exc:
            self.result.refused[exc.code] = self.result.refused.get(exc.code, 0) + 1
            return
        self.result.placed += 1
        self.orders[order_id] = planned
        self.open_orders.add(order_id)
        if planned.rx:
            self.result.rx_orders += 1
            self.after(planned.rx_delays_min[0], _bind(self._request_rx, order_id))
        else:
            self.after(planned.staff_delay_min, _bind(self._prepare, order_id))

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
        doctor_id, private = self.doctor_keys[planned.n % len(self.doctor_keys)]
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
        self.after(
            planned.rx_delays_min[2],
            _bind(self._doctor_issues, order_id, prescription_id, doctor_id, private, payload),
        )

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
            store_actions.prepare(session, order, actor_id=self.pharmacists[order.store_id])
            minutes = self.stores[order.store_id].prep_minutes * self.orders[order_id].prep_factor
        self.after(minutes, _bind(self._ready, order_id))

    def _ready(self, order_id: uuid.UUID) -> None:
        with session_scope() as session:
            order = lifecycle.lock_order(session, order_id)
            store_actions.mark_ready(
                session, order, actor_id=self.pharmacists[order.store_id], now=self.now
            )
        self.board_may_have_jobs = True

    # -- the clock's minute: monitor, sweep, positions, couriers polling -------------------------

    def _minute(self) -> None:
        with session_scope() as session:
            result = monitor.run(session, now=self.now)
            if actions.return_stale_claims(session, now=self.now):
                self.board_may_have_jobs = True
        self.result.at_risk += result.at_risk
        minute = round((self.now - self.plan.start).total_seconds() / 60)
        if minute % POSITION_EVERY_MIN == 0:
            with session_scope() as session:
                for c in self.couriers:
                    if c.leg is not None:
                        couriers.record_position(session, c.user_id, *c.position(self.now))
        # Each idle courier's app refreshes the board once a minute, at its own second.
        for c in self.couriers:
            if c.job_id is None:
                self.after(c.plan.poll_offset_s / 60, _bind(self._poll, c))
        self.on_minute()
        if self.now < self.plan.end or self.open_orders:
            self.after(1, self._minute)

    def _poll(self, c: CourierState) -> None:
        if c.job_id is not None or not self.board_may_have_jobs:
            return
        with session_scope() as session:
            any_open = session.scalar(
                text("SELECT EXISTS (SELECT 1 FROM dispatch_jobs WHERE status = 'open')")
            )
            if not any_open:
                self.board_may_have_jobs = False
                return
            courier = session.get(User, c.user_id)
            lat, lon = c.position(self.now)
            job = pool.claim_next_job(
                session, courier, lat=lat, lon=lon, now=self.now, ranking=self.ranking
            )
            if job is None:
                return
            job_id, store_id, order_id = job.id, job.store_id, job.order_id
        c.at, c.leg = (lat, lon), None  # stops riding home to take the job
        self.result.claims += 1
        self._ride_to_store(c, job_id, store_id, order_id)

    def _ride_to_store(self, c, job_id, store_id, order_id) -> None:
        store = self.stores[store_id]
        target = _latlon(store)
        minutes = self._ride_minutes(c, store, c.at, target, 1.0)
        c.job_id, c.order_n = job_id, self.orders[order_id].n
        c.leg = (c.at, target, self.now, self.now + timedelta(minutes=minutes))
        self.after(minutes, _bind(self._at_store, c, job_id, order_id, store_id))

    def _ride_minutes(self, c, store, origin, target, factor: float) -> float:
        eta = EtaModel.for_store(store)
        leg_noise = self.rng.uniform(0.9, 1.15)
        return (
            eta.travel_minutes(distance_m(origin, target))
            * factor
            * leg_noise
            / c.plan.speed_factor
        )

    def _at_store(self, c: CourierState, job_id: uuid.UUID, order_id: uuid.UUID, store_id: int):
        c.at, c.leg = c.leg[1], None
        try:
            with session_scope() as session:
                courier = session.get(User, c.user_id)
                try:
                    actions.pickup(session, courier, job_id, now=self.now)
                except DomainError:
                    # The claim went stale on the way and returned to the pool: claim it again
                    # at the counter if nobody else has.
                    session.rollback()
                    self.result.claims_lost += 1
                    pool.claim_job(session, courier, job_id, lat=c.at[0], lon=c.at[1], now=self.now)
                    actions.pickup(session, courier, job_id, now=self.now)
        except DomainError:
            c.job_id = c.order_n = None
            return
        planned = self.orders[order_id]
        store = self.stores[store_id]
        minutes = self._ride_minutes(c, store, c.at, planned.dropoff, planned.ride_factor)
        handover = get_settings().sla_handover_minutes * self.rng.uniform(0.5, 1.5)
        c.leg = (c.at, planned.dropoff, self.now, self.now + timedelta(minutes=minutes))
        self.after(minutes + handover, _bind(self._at_door, c, job_id, order_id))

    def _at_door(self, c: CourierState, job_id: uuid.UUID, order_id: uuid.UUID) -> None:
        c.at, c.leg = c.leg[1], None
        c.job_id = c.order_n = None
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
        self._ride_home(c)

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


def _fast_users(session: Session, role: Role, n: int, *, tag: str = "") -> list[int]:
    """Users nobody signs in as (an unusable password hash: hashing is slow by design)."""
    rows = session.scalars(
        text(
            """
            INSERT INTO users (email, name, password_hash, role)
            SELECT 'sim-' || :role || :tag || '-' || g || '@sim.example.com',
                   initcap(:role) || ' ' || g, '!', CAST(:role AS user_role)
            FROM generate_series(1, :n) g
            RETURNING id
            """
        ),
        {"role": role.value, "tag": tag, "n": n},
    ).all()
    return list(rows)


# Kept from one simulated day to the next: loading the demo city is the slow part of a day's
# setup, and its stock is pushed again anyway (the inventory syncs are emptied).
CITY_TABLES = ("stores", "products", "lots", "product_stock_stats")


def reset_day(session: Session) -> None:
    """Empty the simulation's database for a fresh day, keeping the demo city's stores and lots."""
    kept = ("alembic_version", "spatial_ref_sys", *CITY_TABLES)
    listing = text(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> ALL(:kept) ORDER BY tablename"
    )
    owner_url = get_settings().owner_database_url
    if owner_url is None:
        tables = session.scalars(listing, {"kept": list(kept)}).all()
        session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        # The runtime role may not TRUNCATE (nor empty the audit trail): the owner does.
        owner = create_engine(owner_url.get_secret_value(), poolclass=NullPool)
        with owner.begin() as conn:
            tables = conn.scalars(listing, {"kept": list(kept)}).all()
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        owner.dispose()
    # Nothing is reserved once the orders are gone; the stock push then sets what is on hand.
    session.execute(text("UPDATE lots SET reserved = 0 WHERE reserved <> 0"))


def simulate(
    options: Options, *, console: Console | None = None, progress: bool = True
) -> list[DayResult]:
    """Replay one planned day under each dispatch policy; return their results."""
    plan = plan_day(options)
    results = []
    minutes = int(options.hours * 60)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("simulated minutes"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        for policy in POLICIES:
            task = bar.add_task(f"{policy:>26}", total=minutes)

            def tick(task=task) -> None:
                if not bar.tasks[task].finished:
                    bar.advance(task)

            results.append(Day(plan, policy, tick).run())
            bar.update(task, completed=minutes)
    return results
