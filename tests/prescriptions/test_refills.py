"""Refills: a later order filled from a prescription already filled, only as often as the doctor
allowed, only while it is valid, only by its patient, and reviewed by the store's pharmacist."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role
from prescriptions.models import Prescription, PrescriptionAudit
from stores.models import Lot
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import (
    API,
    claim_and_issue,
    items_for,
    key_approved,
    make_rx_order,
    request_rx,
)


def _filled(
    client, world, db, *, refills: int, rx_qty: int = 2, collect: bool = True, lot=None
) -> str:
    """A prescription issued with `refills` and approved once for a first order, which the
    patient collected (unless asked not to); its id."""
    order = world.order(db, rx_qty=rx_qty) if lot is None else _order_from(db, world, lot, rx_qty)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, rx_qty)), refills=refills)
    r = _review(client, world.pharmacist, pid)
    assert r.status_code == 200, r.text
    if collect:
        _hand_over(client, db, world.pharmacist, order)
    return pid


def _order_from(db, world, lot, rx_qty: int = 2, store=None):
    return make_rx_order(db, world.patient, store or world.store, [(world.rx, rx_qty, lot)])


def _hand_over(client, db, pharmacist, order) -> None:
    order.pickup_code = "123456"
    db.flush()
    staff = auth(pharmacist)
    for step, body in (("prepare", None), ("ready", None), ("handover", {"pickup_code": "123456"})):
        r = client.post(f"{API}/orders/{order.id}/{step}", json=body, headers=staff)
        assert r.status_code == 200, r.text


def _review(client, pharmacist, pid, decision: str = "approve"):
    body = {"decision": decision} | ({"reason": "Not this time"} if decision == "reject" else {})
    return client.post(f"{API}/prescriptions/{pid}/review", json=body, headers=auth(pharmacist))


def _refill(client, patient, pid, order):
    return client.post(
        f"{API}/prescriptions/{pid}/refill", json={"order_id": str(order.id)}, headers=auth(patient)
    )


def test_a_refill_goes_to_the_pharmacist_and_releases_the_order(client, db, world):
    first = _filled(client, world, db, refills=1)
    order = world.order(db, rx_qty=2)

    r = _refill(client, world.patient, first, order)
    assert r.status_code == 201, r.text
    refill = r.json()
    assert refill["status"] == "issued" and refill["refill_of"] == first
    assert refill["order_id"] == str(order.id)
    assert (
        refill["signature"]
        == client.get(f"{API}/prescriptions/{first}", headers=auth(world.patient)).json()[
            "signature"
        ]
    )

    # The store's pharmacist finds it in the queue, sees the recent dispensing, approves it.
    queue = client.get(f"{API}/prescriptions/queue", headers=auth(world.pharmacist)).json()
    assert refill["id"] in [item["id"] for item in queue["items"]]
    seen = client.get(f"{API}/prescriptions/{refill['id']}", headers=auth(world.pharmacist)).json()
    assert seen["warnings"], "a refill days after the first fill shows the recent dispensing"
    r = _review(client, world.pharmacist, refill["id"])
    assert r.status_code == 200, r.text
    assert r.json()["order_status"] == "released"

    db.expire_all()
    assert db.get(Order, order.id).status is OrderStatus.RELEASED
    assert db.get(Prescription, first).fills_used == 2
    actions = db.scalars(
        select(PrescriptionAudit.action)
        .where(PrescriptionAudit.prescription_id == refill["id"])
        .order_by(PrescriptionAudit.id)
    ).all()
    assert actions == ["refill_requested", "approved"]
    # The first prescription was dispensed with its order; the refill is counted, and recorded,
    # there.
    assert db.get(Prescription, first).status.value == "dispensed"
    trail = client.get(f"{API}/prescriptions/{first}/audit", headers=auth(world.patient)).json()
    assert trail["items"][-1]["action"] == "refill_approved"
    assert refill["id"] in trail["items"][-1]["reason"]
    assert "fill 2 of 2" in trail["items"][-1]["reason"]
    seen = client.get(f"{API}/prescriptions/{refill['id']}", headers=auth(world.patient)).json()
    assert seen["fills_used"] == 2

    # One course at a time: no further refill before this one is handed over.
    third = world.order(db, rx_qty=2)
    r = _refill(client, world.patient, first, third)
    assert r.status_code == 409 and r.json()["error"]["code"] == "refill_too_early"
    assert r.json()["error"]["details"]["order_id"] == str(order.id)
    _hand_over(client, db, world.pharmacist, order)

    # Both fills used: a third order is refused, from the first row or from the refill's.
    for pid in (first, refill["id"]):
        r = _refill(client, world.patient, pid, third)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "no_refills_left"
    db.expire_all()
    assert db.get(Order, third.id).status is OrderStatus.AWAITING_PRESCRIPTION


def test_no_refill_where_the_doctor_allowed_none(client, db, world):
    first = _filled(client, world, db, refills=0)
    order = world.order(db)
    before = db.scalar(select(PrescriptionAudit.id).order_by(PrescriptionAudit.id.desc()).limit(1))
    r = _refill(client, world.patient, first, order)
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_refills_left"
    assert r.json()["error"]["details"] == {"refills": 0, "fills_used": 1}
    after = db.scalar(select(PrescriptionAudit.id).order_by(PrescriptionAudit.id.desc()).limit(1))
    assert before == after


def test_a_refill_is_for_its_patient_only(client, db, world):
    first = _filled(client, world, db, refills=3)
    theirs = world.order(db, patient=world.other_patient)
    mine = world.order(db)
    # Another patient cannot refill it, even for their own order: the prescription is not theirs.
    r = _refill(client, world.other_patient, first, theirs)
    assert r.status_code == 404 and r.json()["error"]["code"] == "prescription_not_found"
    # The patient cannot attach it to someone else's order.
    r = _refill(client, world.patient, first, theirs)
    assert r.status_code == 404 and r.json()["error"]["code"] == "order_not_found"
    # Staff and doctors cannot ask for a refill on the patient's behalf.
    for user in (world.pharmacist, world.doctor.user, world.admin, world.courier):
        r = client.post(
            f"{API}/prescriptions/{first}/refill",
            json={"order_id": str(mine.id)},
            headers=auth(user),
        )
        assert r.status_code == 403, (user.role, r.text)
    db.expire_all()
    assert db.scalars(select(Prescription).where(Prescription.refill_of == first)).all() == []


def test_a_refill_at_another_store_is_that_store_s_to_review(client, db, world):
    first = _filled(client, world, db, refills=1)
    there = make_lot(db, world.other_store, world.rx, on_hand=10, days=400)
    order = _order_from(db, world, there, store=world.other_store)
    refill = _refill(client, world.patient, first, order).json()
    # The first prescription's store does not review another store's order.
    r = _review(client, world.pharmacist, refill["id"])
    assert r.status_code == 404
    db.expire_all()
    assert db.get(Prescription, refill["id"]).status.value == "issued"
    r = _review(client, world.other_pharmacist, refill["id"])
    assert r.status_code == 200, r.text
    assert r.json()["order_status"] == "released"


def test_a_refill_from_a_refill_counts_on_the_first(client, db, world):
    first = _filled(client, world, db, refills=2)
    order = world.order(db)
    refill = _refill(client, world.patient, first, order).json()
    assert _review(client, world.pharmacist, refill["id"]).status_code == 200
    _hand_over(client, db, world.pharmacist, order)

    again = _refill(client, world.patient, refill["id"], world.order(db))
    assert again.status_code == 201, again.text
    assert again.json()["refill_of"] == first
    assert _review(client, world.pharmacist, again.json()["id"]).status_code == 200
    db.expire_all()
    assert db.get(Prescription, first).fills_used == 3


def test_cancelling_an_approved_refill_gives_the_fill_back(client, db, world):
    first = _filled(client, world, db, refills=1)
    order = world.order(db)
    refill = _refill(client, world.patient, first, order).json()
    assert _review(client, world.pharmacist, refill["id"]).status_code == 200
    r = client.post(
        f"{API}/orders/{order.id}/cancel",
        json={"reason": "Bought elsewhere"},
        headers=auth(world.patient),
    )
    assert r.status_code == 200, r.text

    db.expire_all()
    assert db.get(Prescription, refill["id"]).status.value == "cancelled"
    assert db.get(Prescription, first).fills_used == 1
    trail = client.get(f"{API}/prescriptions/{first}/audit", headers=auth(world.patient)).json()
    assert [e["action"] for e in trail["items"]][-2:] == ["refill_approved", "refill_returned"]
    # The refill can be used for another order.
    r = _refill(client, world.patient, first, world.order(db))
    assert r.status_code == 201, r.text


def test_a_refill_s_lots_must_last_its_own_course(client, db, world):
    """A 7-day course filled twice: the refill's course ends 14 days after signing, so a lot that
    lasts the first course (10 days) is swapped for a longer-dated one on approval."""
    short = make_lot(db, world.store, world.rx, on_hand=10, days=10)
    order = _order_from(db, world, short)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)), refills=1)
    r = _review(client, world.pharmacist, pid)
    assert r.status_code == 200 and r.json()["reallocated"] == []
    _hand_over(client, db, world.pharmacist, order)

    refill_order = _order_from(db, world, short)
    refill = _refill(client, world.patient, pid, refill_order).json()
    r = _review(client, world.pharmacist, refill["id"])
    assert r.status_code == 200, r.text
    assert r.json()["reallocated"] == [
        {"product_id": world.rx.id, "from_lots": [short.id], "to_lots": [world.rx_lot.id]}
    ]


def test_a_refill_exports_the_prescription_it_fills(client, db, world):
    first = _filled(client, world, db, refills=1)
    refill = _refill(client, world.patient, first, world.order(db)).json()
    exports = [
        client.get(f"{API}/prescriptions/{pid}/fhir", headers=auth(world.patient)).json()
        for pid in (first, refill["id"])
    ]
    for bundle in exports:
        bundle.pop("timestamp")
    assert exports[0] == exports[1]
    assert exports[0]["id"] == first


def test_refills_need_a_filled_and_valid_prescription(client, db, world):
    # Issued but never approved: nothing was filled yet, the first fill is the pharmacist's call.
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)), refills=2)
    r = _refill(client, world.patient, pid, world.order(db))
    assert r.status_code == 409 and r.json()["error"]["code"] == "prescription_not_filled"

    # Approved but not handed over yet: one course at a time.
    waiting = _filled(client, world, db, refills=2, collect=False)
    r = _refill(client, world.patient, waiting, world.order(db))
    assert r.status_code == 409 and r.json()["error"]["code"] == "refill_too_early"

    # Filled, then past its validity.
    first = _filled(client, world, db, refills=2)
    p = db.get(Prescription, first)
    p.expires_at = p.expires_at - timedelta(days=5)
    db.flush()
    r = _refill(client, world.patient, first, world.order(db))
    assert r.status_code == 409 and r.json()["error"]["code"] == "prescription_expired"


def test_a_refill_cannot_hold_more_than_was_prescribed(client, db, world):
    first = _filled(client, world, db, refills=1, rx_qty=2)
    bigger = world.order(db, rx_qty=5)
    refill = _refill(client, world.patient, first, bigger).json()
    r = _review(client, world.pharmacist, refill["id"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "exceeds_prescription"
    db.expire_all()
    assert db.get(Prescription, first).fills_used == 1
    assert db.get(Order, bigger.id).status is OrderStatus.AWAITING_PRESCRIPTION


def test_an_order_with_an_open_request_takes_no_refill(client, db, world):
    first = _filled(client, world, db, refills=1)
    order = world.order(db)
    assert _refill(client, world.patient, first, order).status_code == 201
    r = _refill(client, world.patient, first, order)
    assert r.status_code == 409 and r.json()["error"]["code"] == "prescription_already_requested"


# --- the last refill raced for real --------------------------------------------------------------

ORDERS = 4


def test_racing_approvals_take_the_last_refill_once(engine, committed):
    """Refills asked for on several orders; their approvals race: one fill is left, one wins."""
    from main import create_app

    with Session(engine, expire_on_commit=False) as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        lot = make_lot(s, store, product, on_hand=50, days=400)
        patient = make_user(s, role=Role.PATIENT)
        admin = make_user(s, role=Role.ADMIN)
        doctor_user = make_user(s, role=Role.DOCTOR)
        pharmacists = [
            make_user(s, role=Role.PHARMACIST, store_ids=[store.id]) for _ in range(ORDERS)
        ]
        orders = [make_rx_order(s, patient, store, [(product, 1, lot)]) for _ in range(ORDERS + 1)]
        orders[0].pickup_code = "123456"
        s.commit()

    app = create_app()
    with TestClient(app, raise_server_exceptions=False) as c:
        doctor = key_approved(c, doctor_user, admin)
        first = request_rx(c, patient, orders[0])["id"]
        claim_and_issue(c, doctor, first, items_for((product, 1)), refills=1)
        assert _review(c, pharmacists[0], first).status_code == 200
        for step, body in (
            ("prepare", None),
            ("ready", None),
            ("handover", {"pickup_code": "123456"}),
        ):
            r = c.post(
                f"{API}/orders/{orders[0].id}/{step}", json=body, headers=auth(pharmacists[0])
            )
            assert r.status_code == 200, r.text
        refills = []
        for order in orders[1:]:
            r = _refill(c, patient, first, order)
            assert r.status_code == 201, r.text
            refills.append(r.json()["id"])

    barrier = threading.Barrier(ORDERS)

    def approve(job):
        pharmacist, pid = job
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return _review(c, pharmacist, pid)

    with ThreadPoolExecutor(ORDERS) as pool:
        results = list(pool.map(approve, zip(pharmacists, refills, strict=True)))

    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * (ORDERS - 1), [r.text for r in results]
    assert {r.json()["error"]["code"] for r in results if r.status_code == 409} == {
        "prescription_used"
    }
    with Session(engine) as s:
        assert s.get(Prescription, first).fills_used == 2
        statuses = sorted(
            s.scalars(select(Order.status).where(Order.id.in_([o.id for o in orders[1:]]))).all(),
            key=lambda st: st.value,
        )
        assert statuses == [OrderStatus.AWAITING_PRESCRIPTION] * (ORDERS - 1) + [
            OrderStatus.RELEASED
        ]
        # The first order's unit left the shelf at the hand-over; the rest stay reserved.
        assert s.get(Lot, lot.id).reserved == ORDERS
