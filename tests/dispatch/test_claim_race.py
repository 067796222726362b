"""100 couriers claiming at once on real PostgreSQL: no job twice, none skipped, limits held."""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
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
from tests.factories import auth, make_store

COURIERS = 100
JOBS = 150  # fewer than the couriers can hold (2 each): every job must end up claimed


def _board(committed, *, jobs: int, couriers: int) -> list[User]:
    """A store with `jobs` open jobs of various ages, and `couriers` couriers at home there."""
    now = clock.now()
    with committed() as session:
        store = make_store(session, zone_half_side_m=helpers.DELIVERY_ZONE_M)
        for i in range(jobs):
            helpers.make_delivery_order(session, store, released_at=now - timedelta(minutes=i % 60))
        riders = helpers.make_couriers_fast(
            session, couriers, home_store=store, at=factories.offset(300, 0)
        )
        session.commit()
    return riders


def _race(engine, courier_ids: list[int]) -> list[tuple[int, str]]:
    """The couriers claim at once, each on a connection of its own, each claiming again until
    the board has nothing for them or they hold their limit; return (courier, job) claimed."""
    # One connection per courier: they really run at once.
    race_engine = create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(len(courier_ids))
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
    return claimed


def _each_job_held_once(committed, claimed: list[tuple[int, str]], jobs: int) -> None:
    """Every job was claimed exactly once (none left behind), nobody holds more than the limit
    of two, and the database holds each job for the courier it was answered to."""
    job_ids = [job_id for _, job_id in claimed]
    assert len(job_ids) == len(set(job_ids)) == jobs
    assert max(Counter(courier_id for courier_id, _ in claimed).values()) <= 2
    with committed() as session:
        rows = session.execute(select(Job.id, Job.status, Job.courier_id)).all()
        assert {r.status for r in rows} == {JobStatus.CLAIMED}
        assert {(r.courier_id, str(r.id)) for r in rows} == set(claimed)


def test_concurrent_claims_never_give_one_job_to_two_couriers(committed, engine):
    courier_ids = [c.id for c in _board(committed, jobs=JOBS, couriers=COURIERS)]
    claimed = _race(engine, courier_ids)
    _each_job_held_once(committed, claimed, JOBS)


def test_couriers_claiming_at_once_at_many_stores_get_every_job_once(committed, engine):
    """Couriers whose service area holds ten stores claim at once: a claim reads only the best
    two jobs of each store (`pool.CLAIM_CANDIDATES_PER_STORE`), and a claimer who finds all its
    candidates held reads past them, so every job is still claimed exactly once, none is left
    on the board, and nobody holds more than the limit."""
    n_stores, per_store, n_couriers = 10, 9, 60
    now = clock.now()
    area = factories.square_zone(factories.SHANGHAI, 3000)
    with committed() as session:
        stores = [
            make_store(
                session,
                at=factories.offset(150 * k, 100 * k),
                zone_half_side_m=helpers.DELIVERY_ZONE_M,
            )
            for k in range(n_stores)
        ]
        for i in range(per_store):
            for store in stores:
                helpers.make_delivery_order(session, store, released_at=now - timedelta(minutes=i))
        riders = helpers.make_couriers_fast(
            session, n_couriers, home_store=stores[0], at=factories.offset(300, 0)
        )
        for rider in riders:
            couriers.get_courier(session, rider.id).service_area = area_element(parse_area(area))
        session.commit()
        courier_ids = [r.id for r in riders]

    claimed = _race(engine, courier_ids)
    _each_job_held_once(committed, claimed, n_stores * per_store)


def test_couriers_claiming_at_once_over_http_each_get_their_own_jobs(committed):
    """The claim endpoint runs on the driver's pool (no session): forty couriers asking at once
    through the real application each get jobs of their own, up to their limit of two, until
    the board is empty; every job answered is held in the database by the courier it was
    answered to."""
    from main import create_app

    n_couriers, n_jobs = 40, 60
    headers = {c.id: auth(c) for c in _board(committed, jobs=n_jobs, couriers=n_couriers)}
    lat, lon = factories.offset(300, 0)
    start = threading.Barrier(n_couriers)

    with TestClient(create_app(), raise_server_exceptions=False) as client:

        def courier_loop(courier_id: int) -> tuple[list[str], list[int]]:
            answered, statuses = [], []
            start.wait(timeout=60)
            while True:
                r = client.post(
                    "/api/v1/dispatch/claim",
                    json={"lat": lat, "lon": lon},
                    headers=headers[courier_id],
                )
                statuses.append(r.status_code)
                if r.status_code != 200:
                    if r.status_code == 409:
                        assert r.json()["error"]["code"] == "too_many_jobs", r.text
                    return answered, statuses
                assert r.json()["dropoff_exact"] is True  # its own courier sees the address
                answered.append(r.json()["id"])

        with ThreadPoolExecutor(max_workers=n_couriers) as threads:
            results = dict(zip(headers, threads.map(courier_loop, headers), strict=True))

    assert {s for _, statuses in results.values() for s in statuses} <= {200, 204, 409}
    answered = [(cid, job_id) for cid, (jobs, _) in results.items() for job_id in jobs]
    job_ids = [job_id for _, job_id in answered]
    assert len(job_ids) == len(set(job_ids)) == n_jobs  # each once, none left behind
    assert max(Counter(cid for cid, _ in answered).values()) <= 2
    with committed() as session:
        rows = session.execute(select(Job.id, Job.status, Job.courier_id)).all()
        assert {r.status for r in rows} == {JobStatus.CLAIMED}
        assert {(r.courier_id, str(r.id)) for r in rows} == set(answered)


def test_one_courier_claiming_many_times_at_once_over_http_holds_no_more_than_the_limit(
    committed,
):
    """A courier's app firing claims at once (a double tap, a retry storm): the courier's row is
    locked for each claim until it commits, so the job count each one checks sees the others,
    and the courier ends up with exactly the limit (two) whatever the number of claims."""
    from main import create_app

    (rider,) = _board(committed, jobs=20, couriers=1)
    headers = auth(rider)
    lat, lon = factories.offset(300, 0)
    tries = 16
    start = threading.Barrier(tries)

    with TestClient(create_app(), raise_server_exceptions=False) as client:

        def claim(_):
            start.wait(timeout=60)
            return client.post(
                "/api/v1/dispatch/claim", json={"lat": lat, "lon": lon}, headers=headers
            )

        with ThreadPoolExecutor(max_workers=tries) as threads:
            answers = list(threads.map(claim, range(tries)))

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 2, 409: tries - 2}, [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"too_many_jobs"}
    with committed() as session:
        held = session.scalars(select(Job.id).where(Job.courier_id == rider.id)).all()
    assert sorted(map(str, held)) == sorted(r.json()["id"] for r in answers if r.status_code == 200)


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
