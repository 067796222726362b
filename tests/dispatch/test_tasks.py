"""Periodic tasks: stale claims back to the pool, and the SLA monitor exactly once when the task
is sent twice and when a real Celery worker runs it."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from dispatch import actions, pool, tasks
from dispatch.models import Job, JobStatus, SlaBreach, SlaEscalation
from o2o import clock
from o2o.config import get_settings
from o2o.outbox import OutboxEvent
from tests import factories
from tests.dispatch import helpers
from tests.factories import make_store

HERE = factories.offset(300, 0)


def _opened_an_hour_ago(session, *orders) -> None:
    # These tests claim at a time in the past; a job is only on the board once it has opened,
    # and the sweep counts a claim's time from the parcel's readiness when that came later.
    for order in orders:
        order.ready_at = helpers.job_of(session, order).opened_at = clock.now() - timedelta(hours=1)
    session.flush()


def test_a_claim_not_picked_up_in_time_returns_to_the_pool(db, store, courier):
    now = clock.now()
    timeout = get_settings().dispatch_claim_timeout_minutes
    stale = helpers.make_delivery_order(db, store)
    fresh = helpers.make_delivery_order(db, store)
    picked = helpers.make_delivery_order(db, store)
    other = helpers.make_courier(db, home_store=store, at=HERE)
    _opened_an_hour_ago(db, stale, fresh, picked)
    stale_job = pool.claim_job(
        db,
        courier,
        helpers.job_of(db, stale).id,
        lat=HERE[0],
        lon=HERE[1],
        now=now - timedelta(minutes=timeout + 1),
    )
    fresh_job = pool.claim_job(
        db,
        courier,
        helpers.job_of(db, fresh).id,
        lat=HERE[0],
        lon=HERE[1],
        now=now - timedelta(minutes=timeout - 1),
    )
    picked_job = pool.claim_job(
        db,
        other,
        helpers.job_of(db, picked).id,
        lat=HERE[0],
        lon=HERE[1],
        now=now - timedelta(minutes=timeout + 20),
    )
    actions.pickup(db, other, picked_job.id, now=now - timedelta(minutes=timeout + 15))

    assert actions.return_stale_claims(db, now=now) == 1
    assert actions.return_stale_claims(db, now=now) == 0  # idempotent
    statuses = {
        job_id: db.get(Job, job_id).status for job_id in (stale_job.id, fresh_job.id, picked_job.id)
    }
    assert statuses == {
        stale_job.id: JobStatus.OPEN,
        fresh_job.id: JobStatus.CLAIMED,
        picked_job.id: JobStatus.PICKED_UP,
    }
    assert db.get(Job, stale_job.id).courier_id is None
    # The returned job is open to others again.
    lat, lon = HERE
    again = pool.claim_next_job(db, other, lat=lat, lon=lon, now=now)
    assert again.id == stale_job.id


def _seed_for_tasks(committed):
    """Committed rows: an at-risk order, a breached one, and a stale claim."""
    now = clock.now()
    with committed() as session:
        store = make_store(session, zone_half_side_m=helpers.DELIVERY_ZONE_M)
        courier = helpers.make_courier(session, home_store=store, at=HERE)
        at_risk = helpers.make_delivery_order(
            session, store, released_at=now - timedelta(minutes=100)
        )
        breached = helpers.make_delivery_order(
            session, store, released_at=now - timedelta(minutes=130)
        )
        stale = helpers.make_delivery_order(session, store, released_at=now - timedelta(minutes=10))
        _opened_an_hour_ago(session, stale)
        job = pool.claim_job(
            session,
            courier,
            helpers.job_of(session, stale).id,
            lat=HERE[0],
            lon=HERE[1],
            now=now - timedelta(minutes=get_settings().dispatch_claim_timeout_minutes + 5),
        )
        session.commit()
        return at_risk.id, breached.id, job.id


def _exactly_once(committed, at_risk_id, breached_id):
    with committed() as session:
        assert session.get(SlaEscalation, at_risk_id) is not None
        assert (
            session.scalar(
                select(func.count()).select_from(SlaBreach).where(SlaBreach.order_id == breached_id)
            )
            == 1
        )
        for event_type, order_id in (
            ("order.sla_at_risk", at_risk_id),
            ("order.sla_breached", breached_id),
        ):
            n = session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(
                    OutboxEvent.event_type == event_type, OutboxEvent.aggregate_id == str(order_id)
                )
            )
            assert n == 1, event_type


def test_the_monitor_task_sent_twice_acts_once(committed):
    at_risk_id, breached_id, _ = _seed_for_tasks(committed)
    first = tasks.sla_monitor_task()
    second = tasks.sla_monitor_task()  # a second beat in the same minute
    assert first == {"at_risk": 1, "breached": 1, "jobs_escalated": 2}
    assert second is None
    # Even past the period lock (the next minute), nothing happens twice.
    assert tasks.run_sla_monitor() == {"at_risk": 0, "breached": 0, "jobs_escalated": 0}
    _exactly_once(committed, at_risk_id, breached_id)


@pytest.mark.worker
def test_a_real_worker_runs_the_monitor_and_the_stale_claim_sweep(committed, celery_worker_process):
    at_risk_id, breached_id, stale_job_id = _seed_for_tasks(committed)
    outcome = tasks.sla_monitor_task.delay().get(timeout=60)
    assert outcome == {"at_risk": 1, "breached": 1, "jobs_escalated": 2}
    assert tasks.sla_monitor_task.delay().get(timeout=60) is None
    assert tasks.return_stale_claims_task.delay().get(timeout=60) == 1
    tasks.run_sla_monitor()
    _exactly_once(committed, at_risk_id, breached_id)
    with committed() as session:
        job = session.get(Job, stale_job_id)
        assert job.status is JobStatus.OPEN and job.courier_id is None
