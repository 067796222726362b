"""Runs against real PostgreSQL with real commits: many couriers claiming one run at once get it
once; the return sweep run twice (and by two sweepers at once) returns each parcel once, and
never deadlocks with a hand-over at the point; the periodic task runs in a real Celery worker."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from dispatch import pool, run_tasks, runs
from dispatch.models import Job, JobStatus
from dispatch.run_models import ParcelStatus, PickupParcel
from o2o import clock
from o2o.errors import Conflict
from o2o.orders import lifecycle
from o2o.orders.models import Fulfillment, Order, OrderEvent, OrderStatus
from o2o.users.models import Role, User
from stores.models import Lot
from tests import factories
from tests.dispatch import helpers as dispatch_helpers
from tests.factories import make_lot, make_product, make_store, make_user
from tests.pickup_points import helpers

COURIERS = 20


@pytest.fixture
def sessions(committed, engine):
    return sessionmaker(bind=engine, expire_on_commit=False)


def _ready_run(sessions, parcels: int = 3):
    """A store, its point and `parcels` orders packed for the next run (committed)."""
    now = clock.now()
    with sessions() as session:
        store = make_store(session)
        leader = make_user(session, role=Role.LEADER)
        point = helpers.make_point(session, store, leader=leader)
        lot = make_lot(session, store, make_product(session), on_hand=50)
        patient = make_user(session, role=Role.PATIENT)
        order_ids = []
        for _ in range(parcels):
            order = factories.make_order(session, patient, store, [(lot, 1)])
            order.fulfillment = Fulfillment.PICKUP_POINT
            order.pickup_point_id = point.id
            order.delivery_location = point.location
            order.status = OrderStatus.READY
            session.flush()
            run = runs.book(session, order, point, now=now)
            order_ids.append(order.id)
        for order_id in order_ids:
            runs.on_parcel_ready(session, session.get(Order, order_id), now=now)
        session.commit()
        return store, run.departs_at, order_ids


def test_many_couriers_claiming_a_run_at_once_get_it_once(sessions, engine):
    store, departs_at, order_ids = _ready_run(sessions)
    with sessions() as session:
        couriers = dispatch_helpers.make_couriers_fast(
            session, COURIERS, home_store=store, at=factories.offset(300, 0)
        )
        session.commit()
        courier_ids = [c.id for c in couriers]
    at = departs_at - timedelta(minutes=5)
    lat, lon = factories.offset(300, 0)
    race_engine = create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(COURIERS)
    won: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claim(courier_id: int, by_id: bool, job_id) -> None:
        try:
            with Session(race_engine, expire_on_commit=False) as session:
                courier = session.get(User, courier_id)
                barrier.wait(timeout=60)
                try:
                    if by_id:
                        job = pool.claim_job(session, courier, job_id, lat=lat, lon=lon, now=at)
                    else:
                        job = pool.claim_next_job(session, courier, lat=lat, lon=lon, now=at)
                except Conflict as exc:
                    session.rollback()
                    assert exc.code == "job_taken", exc.code
                    return
                session.commit()
                if job is not None:
                    with lock:
                        won.append((courier_id, str(job.id)))
        except BaseException as exc:
            errors.append(exc)

    with sessions() as session:
        job_id = session.scalar(select(Job.id).where(Job.run_id.is_not(None)))
    # Half claim the best next job, half claim the run by its id: all at the same moment.
    threads = [
        threading.Thread(target=claim, args=(cid, i % 2 == 0, job_id))
        for i, cid in enumerate(courier_ids)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    race_engine.dispose()

    assert errors == []
    assert len(won) == 1 and won[0][1] == str(job_id)
    with sessions() as session:
        jobs = session.scalars(select(Job)).all()
        assert len(jobs) == 1  # one job for the run's three parcels
        assert jobs[0].status is JobStatus.CLAIMED and jobs[0].courier_id == won[0][0]


def _waiting(sessions, parcels: int = 2):
    now = clock.now()
    with sessions() as session:
        store = make_store(session)
        point = helpers.make_point(session, store, leader=make_user(session, role=Role.LEADER))
        lot = make_lot(session, store, make_product(session), on_hand=10)
        patient = make_user(session, role=Role.PATIENT)
        order_ids = [
            helpers.waiting_at_point(session, point, patient, lot, now=now).id
            for _ in range(parcels)
        ]
        session.commit()
        return lot.id, order_ids, now + timedelta(hours=48)


def _cancellations(session, order_ids) -> int:
    return session.scalar(
        select(func.count())
        .select_from(OrderEvent)
        .where(OrderEvent.order_id.in_(order_ids), OrderEvent.to_status == OrderStatus.CANCELLED)
    )


def test_the_return_after_the_hold_run_twice_returns_each_parcel_once(sessions):
    lot_id, order_ids, hold_ends = _waiting(sessions)
    with sessions() as session:
        assert session.get(Lot, lot_id).reserved == 2
    # A second before the hold ends nothing moves.
    assert run_tasks.return_uncollected_parcels(now=hold_ends - timedelta(seconds=1)) == 0
    assert run_tasks.return_uncollected_parcels(now=hold_ends) == 2
    assert run_tasks.return_uncollected_parcels(now=hold_ends) == 0
    assert run_tasks.return_uncollected_parcels(now=hold_ends + timedelta(hours=1)) == 0
    with sessions() as session:
        for order_id in order_ids:
            order = session.get(Order, order_id)
            assert order.status is OrderStatus.CANCELLED
            assert "Not collected at the pickup point" in order.cancel_reason
            assert session.get(PickupParcel, order_id).status is ParcelStatus.RETURNED
        assert _cancellations(session, order_ids) == 2
        lot = session.get(Lot, lot_id)
        assert (lot.on_hand, lot.reserved) == (10, 0)  # back on the shelf, once


def test_two_return_sweeps_at_once_return_each_parcel_once(sessions, engine):
    lot_id, order_ids, hold_ends = _waiting(sessions, parcels=6)
    barrier = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=30)
            counts.append(run_tasks.return_uncollected_parcels(now=hold_ends, batch=2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sum(counts) == 6
    with sessions() as session:
        assert _cancellations(session, order_ids) == 6
        lot = session.get(Lot, lot_id)
        assert (lot.on_hand, lot.reserved) == (10, 0)


@pytest.mark.worker
def test_a_real_worker_returns_uncollected_parcels(sessions, celery_worker_process):
    _, order_ids, hold_ends = _waiting(sessions, parcels=1)
    with sessions() as session:
        parcel = session.get(PickupParcel, order_ids[0])
        parcel.hold_expires_at = clock.now() - timedelta(minutes=1)
        session.commit()
    assert run_tasks.return_uncollected_parcels_task.delay().get(timeout=60) == 1
    # Sent again in the same minute (a second beat): the period's key stops it.
    assert run_tasks.return_uncollected_parcels_task.delay().get(timeout=60) is None
    with sessions() as session:
        assert session.get(Order, order_ids[0]).status is OrderStatus.CANCELLED
        assert _cancellations(session, order_ids) == 1


def test_a_return_sweep_and_a_hand_over_at_the_point_never_deadlock(sessions, engine):
    # A hand-over locks its order, then its parcel. The sweep used to lock every due parcel
    # first and then wait for their orders: a hand-over between them deadlocked with it.
    _, (first, second), hold_ends = _waiting(sessions, parcels=2)
    handover = Session(bind=engine)
    lifecycle.lock_order(handover, second)  # a hand-over of the second parcel under way
    handover_pid = handover.scalar(text("SELECT pg_backend_pid()"))
    returned: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            returned.append(run_tasks.return_uncollected_parcels(now=hold_ends, max_batches=1))
        except BaseException as exc:
            errors.append(exc)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    # Until the sweep is done, or waits for a lock the hand-over holds.
    with sessions() as watcher:
        for _ in range(200):
            blocked = watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": handover_pid},
            )
            if blocked or not sweeper.is_alive():
                break
            time.sleep(0.05)
    # The hand-over goes on to its parcel: it gets it at once, and nobody's work is lost.
    handover.execute(text("SET LOCAL lock_timeout = '10s'"))
    parcel = handover.get(PickupParcel, second, with_for_update=True)
    assert parcel.status is ParcelStatus.AT_POINT
    handover.commit()
    sweeper.join(timeout=60)
    assert errors == [] and returned == [1]
    with sessions() as session:
        assert session.get(Order, first).status is OrderStatus.CANCELLED
        assert session.get(PickupParcel, second).status is ParcelStatus.AT_POINT
    # The next sweep returns the parcel the hand-over held (its hold ran out all the same).
    assert run_tasks.return_uncollected_parcels(now=hold_ends) == 1
