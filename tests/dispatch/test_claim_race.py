"""100 couriers claiming at once on real PostgreSQL: no job twice, none skipped, limits held."""

import threading
from collections import Counter
from datetime import timedelta

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from dispatch import couriers, pool
from dispatch.models import Job, JobStatus
from o2o import clock
from o2o.errors import Conflict
from o2o.geo import area_element, parse_area
from o2o.users.models import User
from tests import factories
from tests.dispatch import helpers
from tests.factories import make_store

COURIERS = 100
JOBS = 150  # fewer than the couriers can hold (2 each): every job must end up claimed


def test_concurrent_claims_never_give_one_job_to_two_couriers(committed, engine):
    now = clock.now()
    with committed() as session:
        store = make_store(session, zone_half_side_m=helpers.DELIVERY_ZONE_M)
        for i in range(JOBS):
            helpers.make_delivery_order(session, store, released_at=now - timedelta(minutes=i % 60))
        couriers = helpers.make_couriers_fast(
            session, COURIERS, home_store=store, at=factories.offset(300, 0)
        )
        session.commit()
        courier_ids = [c.id for c in couriers]

    # One connection per courier: they really run at once.
    race_engine = create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(COURIERS)
    claimed: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    lat, lon = factories.offset(300, 0)

    def courier_loop(courier_id: int) -> None:
        try:
            with Session(race_engine, expire_on_commit=False) as session:
                courier = session.get(User, courier_id)
                barrier.wait(timeout=60)
                while True:
                    try:
                        job = pool.claim_next_job(session, courier, lat=lat, lon=lon)
                    except Conflict as exc:
                        session.rollback()
                        assert exc.code == "too_many_jobs"
                        return
                    session.commit()
                    if job is None:
                        return
                    with lock:
                        claimed.append((courier_id, str(job.id)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=courier_loop, args=(cid,)) for cid in courier_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    race_engine.dispose()

    assert errors == []
    job_ids = [job_id for _, job_id in claimed]
    assert len(job_ids) == len(set(job_ids)) == JOBS  # each once, none left behind
    per_courier = Counter(courier_id for courier_id, _ in claimed)
    assert max(per_courier.values()) <= 2
    with committed() as session:
        rows = session.execute(select(Job.id, Job.status, Job.courier_id)).all()
        assert {r.status for r in rows} == {JobStatus.CLAIMED}
        assert {(r.courier_id, str(r.id)) for r in rows} == set(claimed)


def test_ordering_by_deadline_means_an_old_job_is_never_passed_over(db, store, courier):
    """Aging: a far job with the earliest deadline goes before a stream of nearer, newer ones."""
    now = clock.now()
    far = helpers.make_delivery_order(
        db,
        make_store(db, at=factories.offset(4000, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M),
        released_at=now - timedelta(minutes=70),
    )
    courier_row = couriers.get_courier(db, courier.id)
    courier_row.service_area = area_element(
        parse_area(factories.square_zone(factories.SHANGHAI, 9000))
    )
    db.flush()
    for _ in range(3):
        helpers.make_delivery_order(db, store, released_at=now)
    lat, lon = factories.offset(300, 0)
    # Once the far job has waited long enough for the ring to reach its store (3.7 km away).
    job = pool.claim_next_job(db, courier, lat=lat, lon=lon, now=now + timedelta(minutes=5))
    assert job.order_id == far.id
