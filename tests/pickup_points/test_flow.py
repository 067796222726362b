"""A community pickup point from registration to hand-over: the order travels in the store's
scheduled run (a job on the courier board carrying the run's parcels), the leader hands it over
against the patient's code, and the leader's commission shows in the statement and the report."""

import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from dispatch.models import Job
from dispatch.run_models import ParcelStatus, PickupParcel
from o2o import clock
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role
from tests.dispatch import helpers as dispatch_helpers
from tests.factories import auth, make_lot, make_product, make_user, offset, pay_through
from tests.orders.helpers import stock
from tests.pickup_points import helpers
from tests.pickup_points.helpers import API

# 08:30 in Shanghai: the next run the order can make (prep 10 + 30 minutes) leaves at 10:00.
MORNING = datetime(2026, 3, 10, 0, 30, tzinfo=UTC)
TEN_LOCAL = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


def test_an_admin_registers_a_point_and_patients_find_it_nearby(client, db, store, leader):
    admin = make_user(db, role=Role.ADMIN)
    body = {
        "name": "Lobby of Block 7",
        "address": "7 Community Lane",
        "location": {"lat": helpers.POINT_AT[0], "lon": helpers.POINT_AT[1]},
        "leader_user_id": leader.id,
        "commission_rate_bp": 1000,
        "run_times": ["15:00", "10:00"],
    }
    with clock.use(lambda: MORNING):
        r = client.post(f"{API}/stores/{store.id}/pickup-points", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        point = r.json()
        assert point["store"]["id"] == store.id
        assert point["leader_user_id"] == leader.id and point["commission_rate_bp"] == 1000
        assert datetime.fromisoformat(point["next_run"]["departs_at"]) == TEN_LOCAL
        assert point["run_travel_minutes"] == 7  # 1.5 km x 1.35 at 18 km/h

        near = offset(1600, 0)
        r = client.get(f"{API}/pickup-points/nearby", params={"lat": near[0], "lon": near[1]})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["pickup_point"]["id"] == point["id"]
    assert 90 < item["distance_m"] < 110
    # Who leads it and what they earn is not the public's business.
    assert item["pickup_point"]["leader_user_id"] is None
    assert item["pickup_point"]["commission_rate_bp"] is None

    patient = make_user(db, role=Role.PATIENT)
    r = client.post(
        f"{API}/stores/{store.id}/pickup-points",
        json=body | {"leader_user_id": patient.id},
        headers=auth(admin),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_leader"
    r = client.post(
        f"{API}/stores/{store.id}/pickup-points",
        json=body | {"run_times": ["10:00", "10:00"]},
        headers=auth(admin),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_run_times"
    far = offset(40_000, 0)
    r = client.post(
        f"{API}/stores/{store.id}/pickup-points",
        json=body | {"location": {"lat": far[0], "lon": far[1]}},
        headers=auth(admin),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "pickup_point_too_far"
    r = client.post(f"{API}/stores/{store.id}/pickup-points", json=body, headers=auth(leader))
    assert r.status_code == 403


def test_a_pickup_point_order_from_the_order_to_the_hand_over(
    client, db, store, point, leader, lot, staff
):
    patient = make_user(db, role=Role.PATIENT)
    courier = dispatch_helpers.make_courier(db, home_store=store, at=offset(300, 0))
    here = offset(300, 0)
    with clock.use(lambda: MORNING):
        r = client.post(
            f"{API}/orders",
            json=helpers.order_body(point, [(lot.product_id, 2)]),
            headers=auth(patient),
        )
        assert r.status_code == 201, r.text
        placed = r.json()
        assert placed["fulfillment"] == "pickup_point"
        assert placed["pickup_point_id"] == point.id
        assert placed["store"]["id"] == store.id
        assert placed["delivery_fee_minor"] == 0
        # The run's arrival is the order's deadline: 10:00 + 7 minutes, Shanghai time.
        arrival = TEN_LOCAL + timedelta(minutes=7)
        assert datetime.fromisoformat(placed["sla_deadline"]) == arrival
        assert "10:07" in placed["routing_reason"] and point.name in placed["routing_reason"]
        assert placed["pickup_qr"].endswith(placed["pickup_code"])
        order_id = uuid.UUID(placed["id"])
        assert pay_through(client, db, order_id).status_code == 200
        for action in ("prepare", "ready"):
            r = client.post(f"{API}/orders/{order_id}/{action}", headers=auth(staff))
            assert r.status_code == 200, r.text
        # Packed at 08:30: the run is on the board only shortly before it leaves.
        r = client.get(f"{API}/dispatch/jobs", headers=auth(courier))
        assert r.status_code == 200 and r.json()["items"] == []

    before_departure = TEN_LOCAL - timedelta(minutes=5)
    with clock.use(lambda: before_departure):
        r = client.get(f"{API}/dispatch/jobs", headers=auth(courier))
        (listed,) = r.json()["items"]
        assert listed["order_id"] is None and listed["run_id"] is not None
        assert datetime.fromisoformat(listed["deadline"]) == arrival
        r = client.post(
            f"{API}/dispatch/claim", json={"lat": here[0], "lon": here[1]}, headers=auth(courier)
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        assert r.json()["address_text"] == f"{point.name}, {point.address}"
    with clock.use(lambda: TEN_LOCAL):
        r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=auth(courier))
        assert r.status_code == 200, r.text
        assert db.get(Order, order_id).status is OrderStatus.OUT_FOR_DELIVERY

    arrived = arrival - timedelta(minutes=1)
    with clock.use(lambda: arrived):
        r = client.get(f"{API}/pickup-points/{point.id}/runs", headers=auth(leader))
        assert r.status_code == 200, r.text
        (run,) = r.json()["items"]
        assert run["parcels"] == 1 and run["status"] == "en_route"
        wrong = "000000" if run["handoff_code"] != "000000" else "111111"
        r = client.post(
            f"{API}/dispatch/jobs/{job_id}/deliver",
            json={"delivery_code": wrong},
            headers=auth(courier),
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_handoff_code"
        r = client.post(
            f"{API}/dispatch/jobs/{job_id}/deliver",
            json={"delivery_code": run["handoff_code"]},
            headers=auth(courier),
        )
        assert r.status_code == 200, r.text
        db.expire_all()
        order = db.get(Order, order_id)
        assert order.status is OrderStatus.READY  # ready again, at the point
        r = client.get(f"{API}/pickup-points/{point.id}/parcels", headers=auth(leader))
        (parcel,) = r.json()["items"]
        assert parcel["order_id"] == str(order_id)
        assert datetime.fromisoformat(parcel["hold_expires_at"]) == arrived + timedelta(hours=48)

    collected = arrived + timedelta(hours=2)
    with clock.use(lambda: collected):
        wrong = "000000" if order.pickup_code != "000000" else "111111"
        handover = {"order_id": str(order_id), "pickup_code": wrong}
        r = client.post(
            f"{API}/pickup-points/{point.id}/handover", json=handover, headers=auth(leader)
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_pickup_code"
        # The store's counter does not hand over a parcel that waits at a point.
        r = client.post(
            f"{API}/orders/{order_id}/handover",
            json={"pickup_code": order.pickup_code},
            headers=auth(staff),
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_pickup_order"
        handover["pickup_code"] = f"O2O-PICKUP:{order_id}:{order.pickup_code}"
        r = client.post(
            f"{API}/pickup-points/{point.id}/handover", json=handover, headers=auth(leader)
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
        r = client.post(
            f"{API}/pickup-points/{point.id}/handover", json=handover, headers=auth(leader)
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "parcel_collected"

    db.expire_all()
    assert stock(db, lot) == (18, 0)  # the goods left the shelf once
    timeline = [
        e["status"]
        for e in client.get(f"{API}/orders/{order_id}", headers=auth(patient)).json()["timeline"]
    ]
    assert timeline[-4:] == ["ready", "out_for_delivery", "ready", "completed"]

    # 10% of the goods (2 x 18.50 CNY), in the leader's statement and the payments report.
    with clock.use(lambda: collected):
        r = client.get(f"{API}/pickup-points/{point.id}/statement", headers=auth(leader))
    assert r.status_code == 200, r.text
    statement = r.json()
    assert [i["order_id"] for i in statement["items"]] == [str(order_id)]
    assert statement["total"] == [
        {"currency": "CNY", "orders": 1, "goods_minor": 3700, "commission_minor": 370}
    ]
    admin = make_user(db, role=Role.ADMIN)
    r = client.get(
        f"{API}/admin/payments/report",
        params={"from": "2026-03-10", "to": "2026-03-10"},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    (row,) = r.json()["pickup_point_commissions"]
    assert (row["pickup_point_id"], row["leader_user_id"]) == (point.id, leader.id)
    assert (row["orders"], row["goods_minor"], row["commission_minor"]) == (1, 3700, 370)
    r = client.get(
        f"{API}/admin/payments/report",
        params={"from": "2026-03-11", "to": "2026-03-11"},
        headers=auth(admin),
    )
    assert r.json()["pickup_point_commissions"] == []


def test_a_parcel_not_ready_when_its_run_leaves_goes_on_the_next_run(
    client, db, store, point, lot, staff
):
    patient = make_user(db, role=Role.PATIENT)
    with clock.use(lambda: MORNING):
        late = helpers.place_paid_ready(client, db, patient, staff, point, [(lot.product_id, 1)])
        r = client.post(
            f"{API}/orders",
            json=helpers.order_body(point, [(lot.product_id, 1)]),
            headers=auth(patient),
        )
        unpacked = uuid.UUID(r.json()["id"])
        assert pay_through(client, db, unpacked).status_code == 200
    courier = dispatch_helpers.make_courier(db, home_store=store, at=offset(300, 0))
    with clock.use(lambda: TEN_LOCAL):
        here = offset(300, 0)
        r = client.post(
            f"{API}/dispatch/claim", json={"lat": here[0], "lon": here[1]}, headers=auth(courier)
        )
        job_id = r.json()["id"]
        r = client.post(f"{API}/dispatch/jobs/{job_id}/pickup", headers=auth(courier))
        assert r.status_code == 200, r.text
    db.expire_all()
    assert db.get(Order, late).status is OrderStatus.OUT_FOR_DELIVERY
    moved = db.get(Order, unpacked)
    assert moved.status is OrderStatus.RELEASED
    # The 15:00 run (07:00 UTC) now carries it, and its deadline moved with it.
    assert moved.sla_deadline == datetime(2026, 3, 10, 7, 7, tzinfo=UTC)
    assert db.get(PickupParcel, unpacked).status is ParcelStatus.BOOKED
    # Only one job per run ever: the first run's is the courier's, the next has none yet.
    assert db.scalar(select(func.count()).select_from(Job).where(Job.run_id.is_not(None))) == 1


def test_a_wrong_order_or_a_point_order_without_its_point_is_refused(client, db, point, lot):
    patient = make_user(db, role=Role.PATIENT)
    body = helpers.order_body(point, [(lot.product_id, 1)])
    for bad, code in (
        ({"pickup_point_id": None}, "invalid_pickup_point"),
        ({"fulfillment": "pickup"}, "invalid_pickup_point"),
        ({"pickup_point_id": 999_999}, "unknown_pickup_point"),
        ({"store_id": point.store_id}, "invalid_pickup_point"),
    ):
        r = client.post(f"{API}/orders", json=body | bad, headers=auth(patient))
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == code, (bad, r.text)
    assert db.scalar(select(func.count()).select_from(Order)) == 0


def test_a_leader_sees_only_their_own_points_runs_parcels_and_statement(
    client, db, store, point, lot
):
    other_leader = make_user(db, role=Role.LEADER)
    other_point = helpers.make_point(db, store, leader=other_leader, at=offset(0, 1500))
    patient = make_user(db, role=Role.PATIENT)
    order = helpers.waiting_at_point(db, point, patient, lot)
    for path in ("parcels", "runs", "statement"):
        r = client.get(f"{API}/pickup-points/{point.id}/{path}", headers=auth(other_leader))
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "pickup_point_not_found"
        r = client.get(f"{API}/pickup-points/{point.id}/{path}", headers=auth(patient))
        assert r.status_code == 403, (path, r.text)
    handover = {"order_id": str(order.id), "pickup_code": order.pickup_code}
    # Another point's leader cannot hand it over, not even through their own point.
    r = client.post(
        f"{API}/pickup-points/{point.id}/handover", json=handover, headers=auth(other_leader)
    )
    assert r.status_code == 404
    r = client.post(
        f"{API}/pickup-points/{other_point.id}/handover", json=handover, headers=auth(other_leader)
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "parcel_not_found"
    db.expire_all()
    assert db.get(Order, order.id).status is OrderStatus.READY
    assert db.get(Order, order.id).pickup_code_failures == 0


def test_the_pickup_code_locks_after_the_allowed_tries(client, db, point, leader, lot):
    patient = make_user(db, role=Role.PATIENT)
    order = helpers.waiting_at_point(db, point, patient, lot)
    wrong = "000000" if order.pickup_code != "000000" else "111111"
    for _ in range(5):
        r = client.post(
            f"{API}/pickup-points/{point.id}/handover",
            json={"order_id": str(order.id), "pickup_code": wrong},
            headers=auth(leader),
        )
        assert r.status_code == 422
    r = client.post(
        f"{API}/pickup-points/{point.id}/handover",
        json={"order_id": str(order.id), "pickup_code": order.pickup_code},
        headers=auth(leader),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "pickup_code_locked"


def test_the_statement_and_report_count_the_stores_local_days(client, db, point, leader, lot):
    """A hand-over at 23:30 Shanghai time (15:30 UTC) counts on that Shanghai day."""
    patient = make_user(db, role=Role.PATIENT)
    late_evening = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    order = helpers.waiting_at_point(db, point, patient, lot, now=late_evening)
    with clock.use(lambda: late_evening):
        r = client.post(
            f"{API}/pickup-points/{point.id}/handover",
            json={"order_id": str(order.id), "pickup_code": order.pickup_code},
            headers=auth(leader),
        )
        assert r.status_code == 200, r.text
    for day, expected in ((date(2026, 3, 10), 1), (date(2026, 3, 11), 0)):
        r = client.get(
            f"{API}/pickup-points/{point.id}/statement",
            params={"from": str(day), "to": str(day)},
            headers=auth(leader),
        )
        assert len(r.json()["items"]) == expected, (day, r.text)


def test_a_run_whose_only_parcel_is_cancelled_leaves_the_board(
    client, db, store, point, lot, staff
):
    patient = make_user(db, role=Role.PATIENT)
    with clock.use(lambda: MORNING):
        order_id = helpers.place_paid_ready(
            client, db, patient, staff, point, [(lot.product_id, 1)]
        )
        (job,) = db.scalars(select(Job).where(Job.run_id.is_not(None))).all()
        assert job.status.value == "open"
        r = client.post(
            f"{API}/orders/{order_id}/cancel",
            json={"reason": "Changed my mind"},
            headers=auth(patient),
        )
        assert r.status_code == 200, r.text
    db.expire_all()
    assert db.get(Job, job.id).status.value == "cancelled"
    assert db.get(PickupParcel, order_id).status is ParcelStatus.CANCELLED
    assert stock(db, lot) == (20, 0)


def test_a_parcel_carried_to_its_point_can_no_longer_be_substituted_on(
    client, db, store, point, leader, staff
):
    # Ready again at the point, but away from the store's shelves: a question put at the store
    # cannot be answered yes there, and the store cannot ask one.
    asked = make_product(db, generic_name="pointfenac", name="Brand A")
    given = make_product(db, generic_name="pointfenac", name="Brand B")
    old = make_lot(db, store, asked, on_hand=5)
    new = make_lot(db, store, given, on_hand=5)
    patient = make_user(db, role=Role.PATIENT)
    courier = dispatch_helpers.make_courier(db, home_store=store, at=offset(300, 0))
    here = offset(300, 0)
    with clock.use(lambda: MORNING):
        order_id = helpers.place_paid_ready(
            client, db, patient, staff, point, [(asked.id, 2)], substitution="not_allowed"
        )
        swap = {"product_id": asked.id, "to_product_id": given.id, "reason": "out_of_stock"}
        r = client.post(f"{API}/orders/{order_id}/substitutions", json=swap, headers=auth(staff))
        assert r.status_code == 201 and r.json()["substitution"]["status"] == "pending", r.text
        sid = r.json()["substitution"]["id"]
    helpers.carry_run(client, courier, leader, point, here=here, departure=TEN_LOCAL)
    with clock.use(lambda: TEN_LOCAL):
        db.expire_all()
        assert db.get(Order, order_id).status is OrderStatus.READY  # at the point
        held = (stock(db, old), stock(db, new))
        r = client.post(
            f"{API}/orders/{order_id}/substitutions/{sid}/accept", headers=auth(patient)
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_substitutable"
        r = client.post(f"{API}/orders/{order_id}/substitutions", json=swap, headers=auth(staff))
        assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_substitutable"
        db.expire_all()
        assert (stock(db, old), stock(db, new)) == held
        line = client.get(f"{API}/orders/{order_id}", headers=auth(patient)).json()["lines"][0]
        assert line["product_id"] == asked.id
