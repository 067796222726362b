"""Delivery slots: the windows a store offers, ordering for one (SLA at its end, job opened in time
for it), a full slot refused, and concurrent bookings never overfilling a slot."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from dispatch.models import Job, SlaEscalation
from o2o import clock
from o2o.db import session_scope
from o2o.order_flow import store_actions
from o2o.orders.models import Order
from o2o.users.models import Role
from stores import slots
from stores.models import DeliverySlot
from tests.factories import (
    auth,
    make_fleet_load,
    make_lot,
    make_product,
    make_store,
    make_user,
    offset,
    pay,
)
from tests.orders.helpers import order_body, watched

URL = "/api/v1/orders"


@pytest.fixture
def patient(db):
    return make_user(db, role=Role.PATIENT)


@pytest.fixture
def store(db):
    return make_store(db, at=offset(500, 0), zone_half_side_m=3000, name="Riverside Pharmacy")


@pytest.fixture
def product(db, store):
    p = make_product(db, name="Loratadine 10 mg")
    make_lot(db, store, p, on_hand=50)
    return p


def slot_body(product_id: int, slot: dict, **kw) -> dict:
    body = order_body([(product_id, 1)], fulfillment="delivery", address_at=offset(800, 0), **kw)
    body["delivery_slot"] = {"start": slot["start"], "end": slot["end"]}
    return body


def _paid_slot_order(client, db, patient, store, product) -> tuple[dict, str]:
    """The patient orders for the store's fourth slot and pays: return (slot, order id)."""
    slot = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"][3]
    r = client.post(URL, json=slot_body(product.id, slot), headers=auth(patient))
    assert r.status_code == 201, r.text
    pay(db, r.json()["id"])
    return slot, r.json()["id"]


def test_an_order_for_a_slot_compiles_nothing_once_one_has_been_placed(client, db, store, product):
    # Booking a place runs an INSERT ... ON CONFLICT that SQLAlchemy would compile anew for every
    # order; the second order for the store's slots asks for no compilation at all.
    listed = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"]
    first, second = make_user(db, role=Role.PATIENT), make_user(db, role=Role.PATIENT)
    placed = client.post(URL, json=slot_body(product.id, listed[2]), headers=auth(first))
    assert placed.status_code == 201, placed.text

    headers = auth(second)
    with watched() as seen:
        placed = client.post(URL, json=slot_body(product.id, listed[3]), headers=headers)

    assert placed.status_code == 201, placed.text
    assert seen.compiled_anew == [], "\n".join(seen.compiled_anew)


def test_a_store_lists_hourly_slots_from_a_little_ahead_with_their_room(client, store):
    r = client.get(f"/api/v1/stores/{store.id}/delivery-slots")
    assert r.status_code == 200, r.text
    listed = r.json()["slots"]
    starts = [datetime.fromisoformat(s["start"]) for s in listed]
    assert starts and starts == sorted(starts)
    assert starts[0] >= clock.now() + timedelta(minutes=slots.SLOT_LEAD_MINUTES)
    assert starts[-1] < clock.now() + timedelta(days=2)
    for s in listed:
        start, end = datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"])
        assert end - start == timedelta(hours=1) and start.minute == 0
        assert s["capacity"] == s["left"] == store.slot_capacity


def test_slots_lie_within_opening_hours_on_the_stores_own_clock(db):
    # Open 09:00-18:00 in Shanghai: slots from 09:00 to 17:00 local, none at night.
    hours = [{"weekday": d, "opens": "09:00", "closes": "18:00"} for d in range(7)]
    shop = make_store(db, zone_half_side_m=3000, opening_hours=hours)
    now = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 07:30 on 1 December in Shanghai
    listed = slots.open_slots(db, shop, now=now)
    local = [s.start.astimezone(ZoneInfo(shop.timezone)) for s in listed]
    assert [t.hour for t in local[:9]] == list(range(9, 18))
    assert local[0].hour == 9 and local[0].day == 1
    assert {t.hour for t in local} == set(range(9, 18))
    assert len(listed) == 18  # today and tomorrow


def test_an_order_for_a_slot_is_due_at_its_end_and_its_job_opens_in_time(
    client, db, patient, store, product
):
    slot, order_id = _paid_slot_order(client, db, patient, store, product)
    order = client.get(f"{URL}/{order_id}", headers=auth(patient)).json()
    assert order["fulfillment"] == "delivery"
    assert datetime.fromisoformat(order["sla_deadline"]) == datetime.fromisoformat(slot["end"])
    assert order["delivery_slot"] == {"start": slot["start"], "end": slot["end"]}
    assert "the slot you chose" in order["routing_reason"]
    after = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"]
    assert next(s for s in after if s["start"] == slot["start"])["left"] == slot["left"] - 1

    # The store is advised to start in time for the slot, not at once: preparation, the usual
    # wait for a courier, the ride (800 m north to the door, 300 m from the store) and a slack.
    start = datetime.fromisoformat(slot["start"])
    advised = datetime.fromisoformat(order["prepare_from"])
    ride = 300 * store.detour_factor / (store.courier_speed_kmh * 1000 / 60)
    lead = store.prep_minutes + 10 + ride + slots.SLOT_PREPARATION_SLACK_MINUTES
    assert (start - advised).total_seconds() / 60 == pytest.approx(lead, abs=0.5)
    assert advised > datetime.fromisoformat(order["released_at"])

    # Prepared at once all the same, it still waits off the board until a courier taking it
    # then arrives as the slot starts.
    row = db.get(Order, order["id"])
    store_actions.prepare(db, row, actor_id=patient.id)
    store_actions.mark_ready(db, row, actor_id=patient.id)
    job = db.scalar(select(Job).where(Job.order_id == row.id))
    assert clock.now() < job.opened_at < start
    assert start - job.opened_at < timedelta(minutes=40)
    assert job.deadline == datetime.fromisoformat(slot["end"])


def test_a_slot_at_opening_time_is_prepared_as_the_store_opens(db):
    # Open 09:00-18:00 in Shanghai, booked the evening before: the advised start for the 09:00
    # slot would fall before opening, so it is the opening; the 10:00 slot's lies inside opening
    # hours.
    hours = [{"weekday": d, "opens": "09:00", "closes": "18:00"} for d in range(7)]
    shop = make_store(db, zone_half_side_m=3000, opening_hours=hours)
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # 20:00 on 30 November in Shanghai
    nine, ten = (s.start for s in slots.open_slots(db, shop, now=now)[:2])
    assert nine.astimezone(ZoneInfo(shop.timezone)).hour == 9
    door = dict(zip(("lat", "lon"), offset(800, 0), strict=True))
    assert slots.preparation_start(db, shop.id, nine, door) == nine
    advised = slots.preparation_start(db, shop.id, ten, door)
    assert advised is not None and nine <= advised < ten


def test_a_slot_order_started_when_advised_is_not_told_it_is_late_for_a_busy_evening(
    client, db, patient, store, product
):
    # Couriers are busy (a 30-minute wait): started when advised, the parcel lands in the first
    # half of its window, which is on time; the patient is not told otherwise.
    _, order_id = _paid_slot_order(client, db, patient, store, product)
    row = db.get(Order, order_id)
    db.refresh(row)
    make_fleet_load(db, store, wait_minutes=30, at=row.prepare_from, couriers=4)
    store_actions.prepare(db, row, actor_id=patient.id, now=row.prepare_from)
    assert db.get(SlaEscalation, row.id) is None


def test_a_full_slot_is_refused_with_409_and_the_next_one(client, db, store, product):
    store.slot_capacity = 1
    db.flush()
    slot = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"][0]
    first = make_user(db, role=Role.PATIENT)
    second = make_user(db, role=Role.PATIENT)
    assert (
        client.post(URL, json=slot_body(product.id, slot), headers=auth(first)).status_code == 201
    )
    r = client.post(URL, json=slot_body(product.id, slot), headers=auth(second))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "delivery_slot_full"
    assert error["details"]["earliest_slot"]["start"] > slot["start"]
    assert db.scalar(select(func.count()).select_from(Order)) == 1


def test_a_cancelled_slot_order_gives_its_place_back(client, db, store, product):
    store.slot_capacity = 1
    db.flush()
    slot = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"][0]
    first = make_user(db, role=Role.PATIENT)
    placed = client.post(URL, json=slot_body(product.id, slot), headers=auth(first))
    assert placed.status_code == 201
    listed = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"]
    assert slot["start"] not in [s["start"] for s in listed]  # full: no longer offered

    cancel = client.post(
        f"{URL}/{placed.json()['id']}/cancel", json={"reason": "Plans changed"}, headers=auth(first)
    )
    assert cancel.status_code == 200, cancel.text
    again = client.get(f"/api/v1/stores/{store.id}/delivery-slots").json()["slots"][0]
    assert (again["start"], again["left"]) == (slot["start"], 1)
    second = make_user(db, role=Role.PATIENT)
    r = client.post(URL, json=slot_body(product.id, slot), headers=auth(second))
    assert r.status_code == 201, r.text


def test_a_slot_the_store_does_not_offer_is_refused_with_422_and_nothing_written(
    client, db, patient, store, product
):
    start = (clock.now() + timedelta(hours=3)).replace(minute=17, second=0, microsecond=0)
    bad = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    r = client.post(URL, json=slot_body(product.id, bad), headers=auth(patient))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_delivery_slot"
    r = client.post(
        URL,
        json=slot_body(product.id, bad) | {"fulfillment": "pickup"},
        headers=auth(patient),
    )
    assert r.status_code == 422
    assert db.scalar(select(func.count()).select_from(Order)) == 0
    assert db.scalar(select(func.count()).select_from(DeliverySlot)) == 0


@pytest.mark.slow
def test_patients_racing_for_a_slot_never_overfill_it(real_client):
    capacity, patients = 5, 20
    with session_scope() as s:
        store = make_store(s, at=offset(500, 0), zone_half_side_m=3000, slot_capacity=capacity)
        product = make_product(s)
        make_lot(s, store, product, on_hand=100)
        headers = [auth(make_user(s, role=Role.PATIENT)) for _ in range(patients)]
        store_id, product_id = store.id, product.id
    slot = real_client.get(f"/api/v1/stores/{store_id}/delivery-slots").json()["slots"][0]
    body = slot_body(product_id, slot)

    with ThreadPoolExecutor(max_workers=patients) as pool:
        responses = list(pool.map(lambda h: real_client.post(URL, json=body, headers=h), headers))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: capacity, 409: patients - capacity}, [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "delivery_slot_full"
    }
    with session_scope() as s:
        row = s.get(DeliverySlot, (store_id, datetime.fromisoformat(slot["start"])))
        assert (row.booked, row.capacity) == (capacity, capacity)
        assert s.scalar(select(func.count()).select_from(Order)) == capacity
