"""The SLA monitor: predictions by phase, at-risk escalation and breach exactly once, the
compensation, the events, and a late delivery caught at the door."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from dispatch import actions, couriers, monitor, pool, sla
from dispatch.eta import EtaModel
from dispatch.models import SlaBreach, SlaEscalation
from o2o import clock
from o2o.config import get_settings
from o2o.orders.models import Order, OrderStatus
from o2o.outbox import OutboxEvent
from tests import factories
from tests.dispatch import helpers

HERE = factories.offset(300, 0)


def _events(db, event_type, order):
    return db.scalars(
        select(OutboxEvent).where(
            OutboxEvent.event_type == event_type, OutboxEvent.aggregate_id == str(order.id)
        )
    ).all()


def _sphere_m(db, a_wkb, b_wkb) -> float:
    return db.scalar(select(func.ST_Distance(a_wkb, b_wkb, False)))


def test_the_sql_prediction_follows_the_pure_rules_in_every_phase(db, store, courier):
    now = clock.now()
    settings = get_settings()
    assumptions = sla.Assumptions(settings.sla_courier_wait_minutes, settings.sla_handover_minutes)
    eta = EtaModel.for_store(store)
    released = helpers.make_delivery_order(db, store, status=OrderStatus.RELEASED)
    preparing = helpers.make_delivery_order(
        db, store, status=OrderStatus.PREPARING, released_at=now - timedelta(minutes=4)
    )
    # Jobs opened before ready, a courier riding to the store while the order is prepared: from
    # afar (the ride is longer than the preparation left) and from next door (shorter).
    early = {}
    for metres in (3000, 200):
        order = helpers.make_delivery_order(
            db,
            store,
            status=OrderStatus.PREPARING,
            released_at=now - timedelta(minutes=3),
            dropoff=factories.offset(-1200, 1600),
        )
        at = factories.offset(300 + metres, 0)
        rider_early = helpers.make_courier(db, home_store=store, at=at)
        job = actions.new_job(db, order, attempt=1, now=now - timedelta(minutes=5))
        pool.claim_job(db, rider_early, job.id, lat=at[0], lon=at[1], now=now)
        early[order.id] = couriers.get_courier(db, rider_early.id)
    waiting = helpers.make_delivery_order(db, store, dropoff=factories.offset(-2000, 500))
    # Deliveries for a slot three hours ahead: the wait for a courier starts as the job opens in
    # time for the slot, not when the parcel is ready. One not started yet, one ready early.
    slot_start = now + timedelta(hours=3)
    slotted = {}
    for status in (OrderStatus.RELEASED, OrderStatus.READY):
        order = helpers.make_delivery_order(
            db, store, status=status, open_job=False, dropoff=factories.offset(1800, -600)
        )
        order.delivery_slot_start, order.delivery_slot_end = (
            slot_start,
            slot_start + timedelta(hours=1),
        )
        order.sla_deadline = order.delivery_slot_end
        if status is OrderStatus.READY:
            slot_job = actions.new_job(db, order, attempt=1, now=now)
            assert slot_job.opened_at > now + timedelta(hours=2)
        slotted[status] = order
    db.flush()
    claimed = helpers.make_delivery_order(db, store, dropoff=factories.offset(2500, -700))
    claimed_job = pool.claim_job(
        db, courier, helpers.job_of(db, claimed).id, lat=HERE[0], lon=HERE[1], now=now
    )
    rider = helpers.make_courier(db, home_store=store, at=HERE)
    picked = helpers.make_delivery_order(db, store, dropoff=factories.offset(900, 900))
    picked_job = pool.claim_job(
        db, rider, helpers.job_of(db, picked).id, lat=HERE[0], lon=HERE[1], now=now
    )
    actions.pickup(db, rider, picked_job.id, now=now)
    couriers.record_position(db, rider.id, *factories.offset(600, 600), now=now)

    predicted = monitor.predict(db, now=now)

    def store_to_dropoff(order):
        return _sphere_m(db, store.location, order.delivery_location)

    courier_row = couriers.get_courier(db, courier.id)
    rider_row = couriers.get_courier(db, rider.id)
    expected = {
        released.id: sla.remaining_minutes(
            sla.Phase.RELEASED, eta, assumptions, store_to_dropoff_m=store_to_dropoff(released)
        ),
        preparing.id: sla.remaining_minutes(
            sla.Phase.PREPARING,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(preparing),
            minutes_since_release=4,
        ),
        **{
            order_id: sla.remaining_minutes(
                sla.Phase.CLAIMED_WHILE_PREPARING,
                eta,
                assumptions,
                store_to_dropoff_m=_sphere_m(
                    db, store.location, db.get(Order, order_id).delivery_location
                ),
                minutes_since_release=3,
                courier_to_store_m=_sphere_m(db, row.location, store.location),
            )
            for order_id, row in early.items()
        },
        waiting.id: sla.remaining_minutes(
            sla.Phase.AWAITING_COURIER,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(waiting),
            minutes_until_job_opens=(helpers.job_of(db, waiting).opened_at - now).total_seconds()
            / 60,
        ),
        slotted[OrderStatus.RELEASED].id: sla.remaining_minutes(
            sla.Phase.RELEASED,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(slotted[OrderStatus.RELEASED]),
            minutes_until_job_opens=180
            - assumptions.courier_wait_minutes
            - eta.travel_minutes(store_to_dropoff(slotted[OrderStatus.RELEASED])),
        ),
        slotted[OrderStatus.READY].id: sla.remaining_minutes(
            sla.Phase.AWAITING_COURIER,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(slotted[OrderStatus.READY]),
            minutes_until_job_opens=(slot_job.opened_at - now).total_seconds() / 60,
        ),
        claimed.id: sla.remaining_minutes(
            sla.Phase.CLAIMED,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(claimed),
            courier_to_store_m=_sphere_m(db, courier_row.location, store.location),
        ),
        picked.id: sla.remaining_minutes(
            sla.Phase.PICKED_UP,
            eta,
            assumptions,
            store_to_dropoff_m=store_to_dropoff(picked),
            courier_to_dropoff_m=_sphere_m(db, rider_row.location, picked.delivery_location),
        ),
    }
    assert claimed_job.status.value == "claimed"
    for order_id, minutes in expected.items():
        got = (predicted[order_id] - now).total_seconds() / 60
        assert got == pytest.approx(minutes, abs=1e-3), order_id


def test_at_risk_escalates_once_however_often_the_monitor_runs(db, store, courier):
    now = clock.now()
    # Released 100 minutes ago and still waiting for a courier: 20 minutes left, ~14 needed,
    # inside the 15-minute margin.
    order = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=100))
    fine = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=5))

    first = monitor.run(db, now=now)
    second = monitor.run(db, now=now + timedelta(minutes=1))

    assert (first.at_risk, first.breached) == (1, 0)
    assert (second.at_risk, second.breached) == (0, 0)
    assert db.get(SlaEscalation, order.id) is not None
    assert db.get(SlaEscalation, fine.id) is None
    events = _events(db, "order.sla_at_risk", order)
    assert len(events) == 1
    assert events[0].payload["store_id"] == store.id
    assert helpers.job_of(db, order).priority == sla.PRIORITY_AT_RISK
    assert helpers.job_of(db, fine).priority == sla.PRIORITY_NORMAL


def test_breach_is_recorded_compensated_and_told_exactly_once(db, store):
    now = clock.now()
    order = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=125))
    assert order.delivery_fee_minor == 500

    results = [monitor.run(db, now=now + timedelta(minutes=i)) for i in range(3)]

    assert [r.breached for r in results] == [1, 0, 0]
    breaches = db.scalars(select(SlaBreach).where(SlaBreach.order_id == order.id)).all()
    assert len(breaches) == 1
    assert breaches[0].reason == "no_courier"
    assert breaches[0].compensation_minor == 500
    db.refresh(order)
    assert order.compensation_minor == 500
    assert order.total_minor == order.subtotal_minor  # the delivery fee is waived
    told = _events(db, "order.sla_breached", order)
    assert len(told) == 1
    assert told[0].payload["patient_id"] == order.patient_id
    assert told[0].payload["compensation_minor"] == 500
    assert helpers.job_of(db, order).priority == sla.PRIORITY_BREACHED
    # A breached order is not also reported at risk.
    assert _events(db, "order.sla_at_risk", order) == []


def test_breach_reasons_follow_the_phase(db, store, courier):
    now = clock.now()
    long_ago = now - timedelta(minutes=130)
    preparing = helpers.make_delivery_order(
        db, store, status=OrderStatus.PREPARING, released_at=long_ago
    )
    claimed = helpers.make_delivery_order(db, store, released_at=long_ago)
    pool.claim_job(db, courier, helpers.job_of(db, claimed).id, lat=HERE[0], lon=HERE[1])
    monitor.run(db, now=now)
    reasons = dict(db.execute(select(SlaBreach.order_id, SlaBreach.reason)).all())
    assert reasons[preparing.id] == "not_prepared"
    assert reasons[claimed.id] == "not_collected"


@pytest.mark.parametrize(
    ("policy", "fixed", "expected"),
    [("fixed", 1000, 1000), ("fixed", 99_999, 4200), ("none", 0, 0)],
)
def test_the_compensation_follows_the_configured_policy(
    db, store, monkeypatch, policy, fixed, expected
):
    monkeypatch.setattr(get_settings(), "sla_compensation", policy)
    monkeypatch.setattr(get_settings(), "sla_compensation_fixed_minor", fixed)
    now = clock.now()
    order = helpers.make_delivery_order(
        db, store, released_at=now - timedelta(minutes=125), subtotal_minor=3700
    )
    monitor.run(db, now=now)
    db.refresh(order)
    assert order.compensation_minor == expected  # capped at subtotal + fee = 4200


def test_a_late_delivery_is_a_breach_recorded_at_the_door_once(db, store, courier):
    now = clock.now()
    order = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=110))
    job = pool.claim_job(db, courier, helpers.job_of(db, order).id, lat=HERE[0], lon=HERE[1])
    actions.pickup(db, courier, job.id, now=now)
    later = now + timedelta(minutes=15)  # past the deadline, before any monitor run
    actions.deliver(db, courier, job.id, helpers.DELIVERY_CODE, now=later)
    monitor.run(db, now=later + timedelta(minutes=1))

    breach = db.scalars(select(SlaBreach).where(SlaBreach.order_id == order.id)).one()
    assert breach.reason == "delivered_late"
    db.refresh(order)
    assert order.status is OrderStatus.COMPLETED and order.compensation_minor == 500
    assert len(_events(db, "order.sla_breached", order)) == 1


def test_the_monitor_leaves_finished_and_pickup_orders_alone(db, store, courier):
    now = clock.now()
    order = helpers.make_delivery_order(db, store, released_at=now - timedelta(minutes=30))
    job = pool.claim_job(db, courier, helpers.job_of(db, order).id, lat=HERE[0], lon=HERE[1])
    actions.pickup(db, courier, job.id, now=now)
    actions.deliver(db, courier, job.id, helpers.DELIVERY_CODE, now=now)
    result = monitor.run(db, now=now + timedelta(hours=5))
    assert (result.at_risk, result.breached) == (0, 0)
    assert db.scalar(text("SELECT count(*) FROM sla_breaches")) == 0
