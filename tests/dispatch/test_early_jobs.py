"""A delivery's job opens while the store prepares the order, a few minutes before it is due
ready, so its courier rides to the store meanwhile: claimed early, picked up once ready."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from dispatch import actions, fleet, pool
from dispatch.models import Job, JobStatus
from o2o import clock
from o2o.config import get_settings
from o2o.order_flow import store_actions
from o2o.orders.models import OrderStatus
from o2o.users.models import Role
from stores.models import FleetLoad
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth

API = "/api/v1"
NEAR = factories.offset(300, 0)


@pytest.fixture
def lead(monkeypatch):
    monkeypatch.setattr(get_settings(), "dispatch_open_before_ready_minutes", 5)
    return 5


def _released(db, store):
    return helpers.make_delivery_order(db, store, status=OrderStatus.RELEASED, open_job=False)


def _jobs(db, order):
    return db.scalars(select(Job).where(Job.order_id == order.id)).all()


def test_a_job_opens_as_the_store_starts_and_is_claimed_before_ready(
    db, client, store, courier, lead
):
    staff = helpers.make_user_fast(db, Role.PHARMACIST)
    order = _released(db, store)
    started = clock.now()
    store_actions.prepare(db, order, actor_id=staff.id, now=started)
    (job,) = _jobs(db, order)
    # Due ready after the store's preparation (10 minutes): on the board 5 minutes before.
    assert job.status is JobStatus.OPEN
    assert job.opened_at == started + timedelta(minutes=store.prep_minutes - lead)

    # Not on the board yet; once it is, a courier takes it while the order is prepared.
    assert pool.claim_next_job(db, courier, lat=NEAR[0], lon=NEAR[1], now=started) is None
    claimed = pool.claim_next_job(
        db, courier, lat=NEAR[0], lon=NEAR[1], now=started + timedelta(minutes=6)
    )
    assert claimed is not None and claimed.id == job.id
    assert order.status is OrderStatus.PREPARING

    # The courier's app says the parcel is still being prepared.
    r = client.get(f"{API}/dispatch/jobs/{job.id}", headers=auth(courier))
    assert r.status_code == 200, r.text
    assert r.json()["parcel_ready"] is False

    # At the counter before the parcel: told to wait, nothing changes.
    r = client.post(f"{API}/dispatch/jobs/{job.id}/pickup", headers=auth(courier))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "parcel_not_ready"
    db.refresh(job)
    assert job.status is JobStatus.CLAIMED and order.status is OrderStatus.PREPARING

    # Ready: the same job (no second one), picked up at once.
    store_actions.mark_ready(db, order, actor_id=staff.id, now=started + timedelta(minutes=10))
    assert [j.id for j in _jobs(db, order)] == [job.id]
    r = client.post(f"{API}/dispatch/jobs/{job.id}/pickup", headers=auth(courier))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "picked_up" and r.json()["parcel_ready"] is True


def test_an_order_ready_sooner_than_due_puts_its_job_on_the_board_at_once(db, store, courier, lead):
    staff = helpers.make_user_fast(db, Role.PHARMACIST)
    order = _released(db, store)
    started = clock.now()
    store_actions.prepare(db, order, actor_id=staff.id, now=started)
    ready = started + timedelta(minutes=2)  # faster than the store's usual 10
    store_actions.mark_ready(db, order, actor_id=staff.id, now=ready)
    (job,) = _jobs(db, order)
    assert job.opened_at == ready
    taken = pool.claim_next_job(db, courier, lat=NEAR[0], lon=NEAR[1], now=ready)
    assert taken is not None and taken.id == job.id


def test_without_a_lead_the_job_opens_when_the_order_is_ready(db, store, monkeypatch):
    monkeypatch.setattr(get_settings(), "dispatch_open_before_ready_minutes", 0)
    staff = helpers.make_user_fast(db, Role.PHARMACIST)
    order = _released(db, store)
    store_actions.prepare(db, order, actor_id=staff.id)
    assert _jobs(db, order) == []
    store_actions.mark_ready(db, order, actor_id=staff.id)
    assert len(_jobs(db, order)) == 1


def test_a_job_open_while_its_order_is_prepared_counts_once_in_the_fleets_queue(
    db, store, courier, lead
):
    staff = helpers.make_user_fast(db, Role.PHARMACIST)
    order = _released(db, store)
    started = clock.now() - timedelta(minutes=7)
    store_actions.prepare(db, order, actor_id=staff.id, now=started)
    (job,) = _jobs(db, order)
    assert job.opened_at <= clock.now()  # on the board, the order still being prepared
    fleet.refresh(db)
    load = db.get(FleetLoad, store.id)
    assert load.open_jobs == 1


def test_the_stale_claim_sweep_leaves_a_courier_waiting_at_the_counter(db, store, courier, lead):
    staff = helpers.make_user_fast(db, Role.PHARMACIST)
    order = _released(db, store)
    started = clock.now()
    store_actions.prepare(db, order, actor_id=staff.id, now=started)
    (job,) = _jobs(db, order)
    claimed_at = started + timedelta(minutes=5)
    pool.claim_job(db, courier, job.id, lat=NEAR[0], lon=NEAR[1], now=claimed_at)
    timeout = timedelta(minutes=get_settings().dispatch_claim_timeout_minutes)

    # The store is slow: long past the claim's timeout, the parcel is still being made.
    late = claimed_at + timeout + timedelta(minutes=10)
    assert actions.return_stale_claims(db, now=late) == 0
    db.refresh(job)
    assert job.status is JobStatus.CLAIMED and job.courier_id == courier.id

    # Ready at last: the courier has the claim's time again from then, no more.
    store_actions.mark_ready(db, order, actor_id=staff.id, now=late)
    assert actions.return_stale_claims(db, now=late + timeout - timedelta(minutes=1)) == 0
    assert actions.return_stale_claims(db, now=late + timeout + timedelta(minutes=1)) == 1
    db.refresh(job)
    assert job.status is JobStatus.OPEN and job.courier_id is None
