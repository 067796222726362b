"""Batched trips: a courier claims the jobs of one store that fit one trip; each drop is worked on
its own; part of a trip can be released; and racing couriers never share a job."""

import threading
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from dispatch import actions, pool, trips
from dispatch.models import Job, JobStatus
from o2o import clock
from o2o.errors import Conflict
from o2o.orders.models import OrderStatus
from o2o.users.models import User
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_store

NEAR = factories.offset(300, 0)


def _trip(db, courier):
    return trips.claim_trip(db, courier, lat=NEAR[0], lon=NEAR[1])


def test_a_courier_takes_the_store_jobs_that_lie_along_one_way_in_drop_order(db, store, courier):
    far = helpers.make_delivery_order(db, store, dropoff=factories.offset(3000, 0))
    mid = helpers.make_delivery_order(db, store, dropoff=factories.offset(2000, 100))
    near = helpers.make_delivery_order(db, store, dropoff=factories.offset(1000, -100))
    # The other way: too long a detour for this trip.
    behind = helpers.make_delivery_order(db, store, dropoff=factories.offset(-3000, 0))
    elsewhere = helpers.make_delivery_order(
        db, make_store(db, at=factories.offset(0, 600), zone_half_side_m=8000)
    )

    jobs = _trip(db, courier)

    assert [j.order_id for j in jobs] == [near.id, mid.id, far.id]
    assert [j.drop_seq for j in jobs] == [1, 2, 3]
    assert len({j.batch_id for j in jobs}) == 1 and jobs[0].batch_id is not None
    assert jobs[0].drop_eta < jobs[1].drop_eta < jobs[2].drop_eta
    assert all(j.status is JobStatus.CLAIMED and j.courier_id == courier.id for j in jobs)
    for order in (behind, elsewhere):
        assert helpers.job_of(db, order).status is JobStatus.OPEN


def test_each_drop_has_its_own_proof_or_failure_and_part_of_a_trip_can_be_released(
    db, client, store, courier
):
    orders = [
        helpers.make_delivery_order(db, store, dropoff=factories.offset(1000 * (i + 1), 0))
        for i in range(3)
    ]
    r = client.post(
        "/api/v1/dispatch/trips", json={"lat": NEAR[0], "lon": NEAR[1]}, headers=auth(courier)
    )
    assert r.status_code == 200, r.text
    trip = r.json()
    drops = trip["drops"]
    assert [d["order_id"] for d in drops] == [str(o.id) for o in orders]
    assert [d["drop_seq"] for d in drops] == [1, 2, 3]
    assert all(d["batch_id"] == trip["batch_id"] and d["drop_eta"] for d in drops)

    # The courier gives the last one back before pickup: it is open again, on its own.
    last = drops[2]["id"]
    r = client.post(f"/api/v1/dispatch/jobs/{last}/release", headers=auth(courier))
    assert r.status_code == 200, r.text
    released = db.get(Job, helpers.job_of(db, orders[2]).id, populate_existing=True)
    assert released.status is JobStatus.OPEN and released.batch_id is None

    first, second = (drops[0]["id"], drops[1]["id"])
    for job_id in (first, second):
        assert (
            client.post(f"/api/v1/dispatch/jobs/{job_id}/pickup", headers=auth(courier)).status_code
            == 200
        )
    r = client.post(
        f"/api/v1/dispatch/jobs/{first}/deliver",
        json={"delivery_code": helpers.DELIVERY_CODE},
        headers=auth(courier),
    )
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/dispatch/jobs/{second}/fail",
        json={"reason": "Nobody at the door."},
        headers=auth(courier),
    )
    assert r.status_code == 200, r.text
    db.expire_all()
    assert orders[0].status is OrderStatus.COMPLETED
    assert orders[1].status is OrderStatus.READY  # back to the store, a new job open


def test_a_slot_job_waits_off_the_board_until_its_time(db, store, courier):
    order = helpers.make_delivery_order(db, store)
    job = helpers.job_of(db, order)
    job.opened_at = clock.now() + timedelta(minutes=30)
    db.flush()
    assert _trip(db, courier) == []
    later = clock.now() + timedelta(minutes=31)
    jobs = trips.claim_trip(db, courier, lat=NEAR[0], lon=NEAR[1], now=later)
    assert [j.id for j in jobs] == [job.id]


COURIERS = 40
JOBS = 70  # fewer than the couriers can hold (at least 2 each): every job ends up in a trip


def test_racing_couriers_never_put_one_job_in_two_trips(committed, engine):
    with committed() as session:
        store = make_store(session, zone_half_side_m=helpers.DELIVERY_ZONE_M)
        now = clock.now()
        for i in range(JOBS):
            helpers.make_delivery_order(
                session,
                store,
                dropoff=factories.offset(800 + 40 * (i % 50), 30 * (i % 7)),
                released_at=now - timedelta(minutes=i % 30),
            )
        couriers = helpers.make_couriers_fast(session, COURIERS, home_store=store, at=NEAR)
        session.commit()
        courier_ids = [c.id for c in couriers]

    race_engine = create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(COURIERS)
    claimed: list[tuple[int, str, str | None]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def courier_loop(courier_id: int) -> None:
        try:
            with Session(race_engine, expire_on_commit=False) as session:
                courier = session.get(User, courier_id)
                barrier.wait(timeout=60)
                while True:
                    try:
                        jobs = trips.claim_trip(session, courier, lat=NEAR[0], lon=NEAR[1])
                    except Conflict as exc:
                        session.rollback()
                        assert exc.code == "too_many_jobs"
                        return
                    session.commit()
                    if not jobs:
                        # Nothing free this instant: the rest may be locked by claimers still
                        # choosing their batch-mates. Stop only once nothing is open.
                        left = session.scalar(
                            select(func.count())
                            .select_from(Job)
                            .where(Job.status == JobStatus.OPEN)
                        )
                        session.commit()
                        if not left:
                            return
                        time.sleep(0.05)
                        continue
                    with lock:
                        claimed.extend(
                            (courier_id, str(j.id), str(j.batch_id) if j.batch_id else None)
                            for j in jobs
                        )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=courier_loop, args=(cid,)) for cid in courier_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    race_engine.dispose()

    assert errors == []
    job_ids = [job_id for _, job_id, _ in claimed]
    assert len(job_ids) == len(set(job_ids)) == JOBS  # each job once, none left behind
    # A trip belongs to one courier; somebody did carry several parcels at once.
    owners = {}
    for courier_id, _, batch in claimed:
        if batch is not None:
            assert owners.setdefault(batch, courier_id) == courier_id
    assert max(Counter(b for _, _, b in claimed if b).values()) >= 2
    with committed() as session:
        rows = session.execute(select(Job.id, Job.status, Job.courier_id, Job.batch_id)).all()
        assert {r.status for r in rows} == {JobStatus.CLAIMED}
        assert {(r.courier_id, str(r.id)) for r in rows} == {(c, j) for c, j, _ in claimed}


def test_a_plain_claim_still_takes_one_job(db, store, courier):
    for i in range(3):
        helpers.make_delivery_order(db, store, dropoff=factories.offset(1000 + 100 * i, 0))
    job = pool.claim_next_job(db, courier, lat=NEAR[0], lon=NEAR[1])
    assert job.batch_id is None
    assert len(actions.my_jobs(db, courier)) == 1
