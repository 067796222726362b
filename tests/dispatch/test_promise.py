"""The promise knows the fleet: the wait for a courier around a store (from its open jobs and
the couriers near it) is in the delivery ETA at search and checkout; at saturation `auto` goes to
pickup and says why, and an explicit delivery is refused with the earliest slot."""

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from dispatch import fleet, monitor, sla
from o2o import clock
from o2o.config import get_settings
from o2o.orders.models import Order
from o2o.users.models import Role
from stores.models import FleetLoad
from tests import factories
from tests.dispatch import helpers
from tests.factories import auth, make_lot, make_product, make_user

ORDERS = "/api/v1/orders"
SEARCH = "/api/v1/search/stores"
HOME = factories.offset(-200, 0)
ADDRESS = factories.offset(1200, 0)


@pytest.fixture(autouse=True)
def _payment_app(db) -> None:
    """Online orders are paid to a registered payment app."""
    factories.payment_app(db)


@pytest.fixture
def product(db, store):
    p = make_product(db, name="Cetirizine 10 mg")
    make_lot(db, store, p, on_hand=50)
    return p


def body(product_id: int, fulfillment: str) -> dict:
    return {
        "items": [{"product_id": product_id, "quantity": 1}],
        "location": {"lat": HOME[0], "lon": HOME[1]},
        "fulfillment": fulfillment,
        "delivery_address": {
            "location": {"lat": ADDRESS[0], "lon": ADDRESS[1]},
            "text": "Room 12, 3 Example Rd",
        },
    }


def search_eta(client, product_id: int) -> dict:
    r = client.post(
        SEARCH,
        json={
            "location": {"lat": HOME[0], "lon": HOME[1]},
            "items": [{"product_id": product_id, "quantity": 1}],
            "fulfillment": "delivery",
            "delivery_location": {"lat": ADDRESS[0], "lon": ADDRESS[1]},
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def saturate(db, store, *, jobs: int, couriers: int) -> None:
    """Open jobs at the store, a few busy couriers around it, then let dispatch estimate."""
    for _ in range(jobs):
        helpers.make_delivery_order(db, store)
    for _ in range(couriers):
        helpers.make_courier(db, home_store=store, at=factories.offset(400, 0))
    fleet.refresh(db)


def test_an_idle_fleet_adds_only_the_ride_to_the_store(client, db, store, product):
    plain = search_eta(client, product.id)
    assert plain["courier_wait_minutes"] == 0  # no estimate yet: preparation plus travel
    saturate(db, store, jobs=0, couriers=5)
    found = search_eta(client, product.id)
    assert 0 < found["courier_wait_minutes"] <= 10
    assert found["eta_minutes"] == plain["eta_minutes"] + found["courier_wait_minutes"]


def test_at_saturation_auto_goes_to_pickup_and_says_why(client, db, store, product):
    saturate(db, store, jobs=40, couriers=2)
    load = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert load.open_jobs == 40 and load.couriers == 2 and load.courier_wait_minutes > 120
    assert search_eta(client, product.id)["eta_minutes"] > 120

    patient = make_user(db, role=Role.PATIENT)
    r = client.post(ORDERS, json=body(product.id, "auto"), headers=auth(patient))
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["fulfillment"] == "pickup"
    assert "couriers near" in order["routing_reason"]
    assert "busy" in order["routing_reason"]


def test_at_saturation_a_delivery_is_refused_with_the_earliest_slot(client, db, store, product):
    saturate(db, store, jobs=40, couriers=2)
    patient = make_user(db, role=Role.PATIENT)
    r = client.post(ORDERS, json=body(product.id, "delivery"), headers=auth(patient))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "delivery_unavailable"
    slot = error["details"]["earliest_slot"]
    assert slot["store"]["id"] == store.id and slot["left"] >= 1
    assert "start" in slot and "end" in slot
    # The patient takes it.
    ordered = body(product.id, "delivery") | {
        "delivery_slot": {"start": slot["start"], "end": slot["end"]}
    }
    r = client.post(ORDERS, json=ordered, headers=auth(patient))
    assert r.status_code == 201, r.text
    chosen = r.json()["delivery_slot"]
    assert [datetime.fromisoformat(chosen[k]) for k in ("start", "end")] == [
        datetime.fromisoformat(slot[k]) for k in ("start", "end")
    ]
    factories.pay(db, r.json()["id"])  # the deadline is set when the paid order is released
    paid = client.get(f"{ORDERS}/{r.json()['id']}", headers=auth(patient)).json()
    assert paid["sla_deadline"].startswith(slot["end"][:16])


def test_a_stale_estimate_is_ignored(client, db, store, product):
    saturate(db, store, jobs=40, couriers=2)
    load = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    load.computed_at = clock.now() - timedelta(hours=1)
    db.flush()
    assert search_eta(client, product.id)["courier_wait_minutes"] == 0


def test_the_monitor_predicts_with_the_fleets_wait(db, store):
    order = helpers.make_delivery_order(db, store, released_at=clock.now())
    before = monitor.predict(db)[order.id]
    saturate(db, store, jobs=40, couriers=2)
    after = monitor.predict(db)[order.id]
    assert after - before > timedelta(minutes=100)


def test_couriers_going_off_shift_soon_are_not_counted_on(client, db, store, product):
    saturate(db, store, jobs=6, couriers=6)
    before = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert before.couriers == 6
    leaving = helpers.make_courier(db, home_store=store, at=factories.offset(400, 0))
    soon = clock.now() + timedelta(minutes=30)
    r = client.put(
        "/api/v1/couriers/me/shift", json={"ends_at": soon.isoformat()}, headers=auth(leaving)
    )
    assert r.status_code == 200, r.text
    past = clock.now() - timedelta(minutes=1)
    r = client.put(
        "/api/v1/couriers/me/shift", json={"ends_at": past.isoformat()}, headers=auth(leaving)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_shift_end"
    fleet.refresh(db)
    db.expire_all()
    after = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert after.couriers == 6  # the seventh leaves within the horizon: not counted


def test_a_store_whose_jobs_sit_unclaimed_promises_no_less_than_they_wait(db, store):
    """Couriers idle nearby, but none takes this store's jobs (outside their areas, say): the
    promise counts the wait its jobs really have, not the calm the neighbourhood suggests."""
    saturate(db, store, jobs=0, couriers=5)
    calm = db.scalar(select(FleetLoad.courier_wait_minutes).where(FleetLoad.store_id == store.id))
    assert calm <= 10
    for _ in range(2):
        order = helpers.make_delivery_order(db, store)
        helpers.job_of(db, order).opened_at = clock.now() - timedelta(minutes=50)
    db.flush()
    fleet.refresh(db)
    db.expire_all()
    load = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert load.courier_wait_minutes >= 50
    # The monitor's escalations follow the queue model alone, which still sees idle couriers.
    assert load.queue_wait_minutes <= 10


def test_couriers_whose_area_leaves_out_the_store_are_not_counted_on(db, store):
    """A courier riding past a store outside their service area never takes its jobs: the wait
    promised for it does not count on them."""
    saturate(db, store, jobs=12, couriers=2)
    before = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert before.couriers == 2
    promised = before.courier_wait_minutes
    passing = factories.square_zone(factories.offset(0, 4000), 1500)  # 4 km east, not the store
    covering = factories.square_zone(factories.offset(0, 0), 1500)
    for area in (passing, passing, passing, covering):
        helpers.make_courier(db, area=area, at=factories.offset(400, 0))
    fleet.refresh(db)
    db.expire_all()
    after = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert after.couriers == 3  # the two at home, and the one whose area covers the store
    assert after.queue_wait_minutes < after.courier_wait_minutes < promised


def _paid_delivery(client, db, product) -> dict:
    patient = make_user(db, role=Role.PATIENT)
    r = client.post(ORDERS, json=body(product.id, "delivery"), headers=auth(patient))
    assert r.status_code == 201, r.text
    factories.pay(db, r.json()["id"])  # released: the deadline and the advised start are set
    return client.get(f"{ORDERS}/{r.json()['id']}", headers=auth(patient)).json()


def test_with_couriers_free_the_store_is_advised_to_start_at_once(client, db, store, product):
    saturate(db, store, jobs=0, couriers=5)
    order = _paid_delivery(client, db, product)
    assert order["prepare_from"] == order["released_at"]


def test_without_just_in_time_preparation_a_queue_holds_nothing(client, db, store, product):
    saturate(db, store, jobs=12, couriers=4)
    load = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert load.hold_minutes == 0
    order = _paid_delivery(client, db, product)
    assert order["prepare_from"] == order["released_at"]


def test_with_a_queue_of_jobs_the_store_is_advised_to_start_just_in_time(
    client, db, store, product, monkeypatch
):
    monkeypatch.setattr(get_settings(), "dispatch_jit_preparation", True)
    # 12 orders released in the last half hour and 4 couriers: they arrive faster than the
    # couriers clear them, and the new job's turn comes well after preparation would end.
    saturate(db, store, jobs=12, couriers=4)
    load = db.scalar(select(FleetLoad).where(FleetLoad.store_id == store.id))
    assert load.hold_minutes > 0 and load.courier_wait_minutes <= 120
    order = _paid_delivery(client, db, product)
    released = datetime.fromisoformat(order["released_at"])
    advised = datetime.fromisoformat(order["prepare_from"])
    assert advised - released == pytest.approx(timedelta(minutes=load.hold_minutes), abs=1)
    assert advised < datetime.fromisoformat(order["sla_deadline"])


def _start_on(client, db, store, order_id):
    """A pharmacist of the store starts on the order; return its at-risk notice (when it was
    told, the finish it predicted) with the moment the store started, or fail if none."""
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    r = client.post(f"{ORDERS}/{order_id}/prepare", headers=auth(staff))
    assert r.status_code == 200, r.text
    return db.execute(
        text(
            "SELECT e.escalated_at, e.predicted_finish, ev.at AS started FROM sla_escalations e "
            "JOIN order_events ev ON ev.order_id = e.order_id AND ev.to_status = 'preparing' "
            "WHERE e.order_id = :id"
        ),
        {"id": order_id},
    ).one()


def test_starting_on_a_delivery_the_fleet_can_no_longer_make_tells_the_patient_first(
    client, db, store, product
):
    order = _paid_delivery(client, db, product)  # promised while the fleet was calm
    saturate(db, store, jobs=40, couriers=2)  # then the evening comes
    told = _start_on(client, db, store, order["id"])
    assert told.escalated_at <= told.started
    notices = db.scalar(
        text(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'order.sla_at_risk' "
            "AND aggregate_id = :id"
        ),
        {"id": order["id"]},
    )
    assert notices == 1


def test_starting_on_a_delivery_the_fleet_can_make_tells_nobody(client, db, store, product):
    order = _paid_delivery(client, db, product)
    saturate(db, store, jobs=0, couriers=5)
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    r = client.post(f"{ORDERS}/{order['id']}/prepare", headers=auth(staff))
    assert r.status_code == 200, r.text
    assert not db.scalar(
        text("SELECT count(*) FROM sla_escalations WHERE order_id = :id"), {"id": order["id"]}
    )


def _fleet_wait(db, store, minutes: float, *, queue: float | None = None) -> None:
    """The fleet's estimate for the store: `minutes` promised, `queue` (else the same) for the
    monitor."""
    db.execute(
        text(
            "INSERT INTO store_fleet_load (store_id, courier_wait_minutes, queue_wait_minutes, "
            "hold_minutes, open_jobs, couriers, computed_at) VALUES (:s, :w, :q, 0, 6, 2, :now) "
            "ON CONFLICT (store_id) DO UPDATE SET "
            "courier_wait_minutes = EXCLUDED.courier_wait_minutes, "
            "queue_wait_minutes = EXCLUDED.queue_wait_minutes, computed_at = EXCLUDED.computed_at"
        ),
        {"s": store.id, "w": minutes, "q": minutes if queue is None else queue, "now": clock.now()},
    )


def _due_minutes_before_deadline(client, db, store, product, minutes: float):
    """A paid delivery, and the fleet's wait that predicts it `minutes` before its deadline:
    return (order id, deadline, that wait)."""
    order = _paid_delivery(client, db, product)
    order_id = uuid.UUID(order["id"])
    deadline = datetime.fromisoformat(order["sla_deadline"])
    calm = monitor.predict(db)[order_id]
    wait = get_settings().sla_courier_wait_minutes
    wait += (deadline - timedelta(minutes=minutes) - calm).total_seconds() / 60
    _fleet_wait(db, store, wait)
    return order_id, deadline, wait


def test_a_promise_near_its_margin_is_told_as_the_store_starts_not_left_to_the_monitor(
    client, db, store, product
):
    # The fleet's wait moves between two passes of the monitor: as the store starts, a delivery
    # predicted to land within the wider margin (60 min) of its deadline is told now, while the
    # monitor's own margin (15 min) would still call it on track.
    order_id, deadline, _ = _due_minutes_before_deadline(client, db, store, product, 22)
    predicted = monitor.predict(db)[order_id]
    assert abs((deadline - predicted).total_seconds() / 60 - 22) < 0.1
    assert monitor.run(db).at_risk == 0  # on track by the monitor's margin

    told = _start_on(client, db, store, order_id)
    assert told.escalated_at <= told.started
    assert told.predicted_finish > deadline - timedelta(minutes=30)


def test_a_job_told_early_keeps_its_place_until_its_finish_nears_the_deadline(
    client, db, store, product
):
    # Told as the store starts (predicted 25 minutes before the deadline, inside the wide margin),
    # the job does not jump the queue yet: once the prediction comes within the monitor's own
    # margin (15 minutes), it does.
    order_id, deadline, wait = _due_minutes_before_deadline(client, db, store, product, 25)
    told = _start_on(client, db, store, order_id)
    assert told.escalated_at <= told.started
    staff = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    r = client.post(f"{ORDERS}/{order_id}/ready", headers=auth(staff))
    assert r.status_code == 200, r.text
    db.expire_all()
    job = helpers.job_of(db, db.get(Order, order_id))

    monitor.run(db)
    db.refresh(job)
    assert job.priority == sla.PRIORITY_NORMAL  # told, but still well on time: no wide ring yet

    ready = monitor.predict(db)[order_id]
    _fleet_wait(db, store, wait + (deadline - timedelta(minutes=5) - ready).total_seconds() / 60)
    assert monitor.predict(db)[order_id] > deadline - timedelta(minutes=15)
    monitor.run(db)
    db.refresh(job)
    assert job.priority == sla.PRIORITY_AT_RISK  # now within the monitor's margin: escalated


def test_the_monitor_predicts_with_the_queue_and_the_check_with_the_promise(
    client, db, store, product
):
    # The store's jobs have waited an hour (the promised wait), though the neighbourhood's queue
    # says five minutes: the monitor, which escalates, follows the queue; the check as the store
    # starts, which tells the patient, follows the promise.
    order = _paid_delivery(client, db, product)
    order_id = uuid.UUID(order["id"])
    deadline = datetime.fromisoformat(order["sla_deadline"])
    _fleet_wait(db, store, 100, queue=5)
    assert monitor.predict(db)[order_id] < deadline - timedelta(minutes=60)
    assert monitor.run(db).at_risk == 0
    told = _start_on(client, db, store, order_id)
    assert told.escalated_at <= told.started
    assert told.predicted_finish > deadline - timedelta(minutes=60)


def _handed_back(client, db, store, courier_headers) -> Order:
    """A delivery 20 minutes into its promise, taken out and handed back: nobody at the door."""
    order = helpers.make_delivery_order(db, store)
    here = {"lat": factories.offset(300, 0)[0], "lon": factories.offset(300, 0)[1]}
    job_id = client.post("/api/v1/dispatch/claim", json=here, headers=courier_headers).json()["id"]
    r = client.post(f"/api/v1/dispatch/jobs/{job_id}/pickup", headers=courier_headers)
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/dispatch/jobs/{job_id}/fail",
        json={"reason": "Nobody at the door."},
        headers=courier_headers,
    )
    assert r.status_code == 200, r.text
    db.expire_all()
    return order


def test_a_redelivery_the_fleet_cannot_make_in_time_is_told_as_the_parcel_comes_back(
    client, db, store, courier_headers
):
    # The deadline is 100 minutes away, the fleet's wait as long: the parcel's second trip cannot
    # make it. The patient hears it as the courier hands the parcel back, not at the monitor's
    # next pass, and the new job opens escalated.
    _fleet_wait(db, store, 100)
    order = _handed_back(client, db, store, courier_headers)
    told = db.execute(
        text(
            "SELECT e.escalated_at, e.predicted_finish, j.closed_at FROM sla_escalations e "
            "JOIN dispatch_jobs j ON j.order_id = e.order_id AND j.status = 'failed' "
            "WHERE e.order_id = :id"
        ),
        {"id": order.id},
    ).one()
    assert told.escalated_at <= told.closed_at
    assert told.predicted_finish > order.sla_deadline
    notices = db.scalar(
        text(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'order.sla_at_risk' "
            "AND aggregate_id = :id"
        ),
        {"id": str(order.id)},
    )
    assert notices == 1
    assert helpers.job_of(db, order).priority == sla.PRIORITY_AT_RISK


def test_a_redelivery_the_fleet_can_make_tells_nobody(client, db, store, courier_headers):
    _fleet_wait(db, store, 5)
    order = _handed_back(client, db, store, courier_headers)
    assert not db.scalar(
        text("SELECT count(*) FROM sla_escalations WHERE order_id = :id"), {"id": order.id}
    )
    assert helpers.job_of(db, order).priority == sla.PRIORITY_NORMAL
