"""The periodic sweeps: requests no doctor took escalate, issued prescriptions no pharmacist
reviewed are flagged to the store, and prescriptions past their validity expire. Each acts once."""

import uuid
from datetime import timedelta

from sqlalchemy import select

from o2o import clock
from o2o.db import session_scope
from o2o.outbox import OutboxEvent
from o2o.users.models import Role
from prescriptions import identity, sweeps, tasks
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.workflow import PrescriptionStatus
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import API, claim_and_issue, items_for, make_rx_order, request_rx


def _events(db, pid, event_type):
    return db.scalars(
        select(OutboxEvent).where(
            OutboxEvent.aggregate_id == pid, OutboxEvent.event_type == event_type
        )
    ).all()


def _actions(client, world, pid):
    r = client.get(f"{API}/prescriptions/{pid}/audit", headers=auth(world.admin))
    return [e["action"] for e in r.json()["items"]]


def test_unclaimed_request_escalates_once_and_shows_overdue(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    now = clock.now()
    assert sweeps.escalate_unclaimed(db, now + timedelta(minutes=14)) == 0

    later = now + timedelta(minutes=16)
    assert sweeps.escalate_unclaimed(db, later) == 1
    assert sweeps.escalate_unclaimed(db, later + timedelta(minutes=5)) == 0  # once
    events = _events(db, pid, "prescription.escalated")
    assert len(events) == 1 and events[0].payload["store_id"] == world.store.id
    assert _actions(client, world, pid) == ["requested", "escalated"]

    item = next(
        i
        for i in client.get(f"{API}/prescriptions/queue", headers=world.doctor.headers).json()[
            "items"
        ]
        if i["id"] == pid
    )
    assert item["overdue"] is True
    assert client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient)).json()["escalated"]


def test_queue_overdue_by_waiting_time_before_the_sweep(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    later = clock.now() + timedelta(minutes=20)
    with clock.use(lambda: later):
        r = client.get(f"{API}/prescriptions/queue", headers=world.doctor.headers)
    item = r.json()["items"][0]
    assert item["id"] == pid
    assert item["overdue"] is True and item["waited_minutes"] >= 19


def test_claimed_requests_do_not_escalate(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers)
    assert sweeps.escalate_unclaimed(db, clock.now() + timedelta(hours=1)) == 0


def test_unreviewed_prescription_is_flagged_to_the_store_once(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    later = clock.now() + timedelta(minutes=31)
    assert sweeps.flag_unreviewed(db, later) == 1
    assert sweeps.flag_unreviewed(db, later) == 0
    events = _events(db, pid, "prescription.review_overdue")
    assert len(events) == 1 and events[0].payload["store_id"] == world.store.id
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.pharmacist))
    assert r.json()["review_overdue"] is True
    item = client.get(f"{API}/prescriptions/queue", headers=auth(world.pharmacist)).json()["items"][
        0
    ]
    assert item["id"] == pid and item["overdue"] is True


def test_expired_prescriptions_are_marked_with_an_audit_entry(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)), valid_hours=2)
    assert sweeps.expire_issued(db, clock.now() + timedelta(hours=1)) == 0
    later = clock.now() + timedelta(hours=2, minutes=1)
    assert sweeps.expire_issued(db, later) == 1
    assert sweeps.expire_issued(db, later) == 0
    db.expire_all()
    assert db.get(Prescription, uuid.UUID(pid)).status.value == "expired"
    assert _actions(client, world, pid)[-1] == "expired"
    assert len(_events(db, pid, "prescription.expired")) == 1
    # Gone from the pharmacist's queue; the patient may ask again for the same order.
    assert (
        client.get(f"{API}/prescriptions/queue", headers=auth(world.pharmacist)).json()["items"]
        == []
    )
    assert request_rx(client, world.patient, order)["status"] == "requested"


def _committed_expired_prescription() -> uuid.UUID:
    """An issued prescription whose validity has passed, committed for the task's own session."""
    now = clock.now()
    with session_scope() as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        patient = make_user(s, role=Role.PATIENT)
        doctor = make_user(s, role=Role.DOCTOR)
        order = make_rx_order(s, patient, store, [(product, 1, make_lot(s, store, product))])
        p = Prescription(
            order_id=order.id,
            patient_id=patient.id,
            status=PrescriptionStatus.ISSUED,
            legal_name="Li Wei",
            id_number_hmac=identity.hash_id_number("110101199001011234")[1],
            id_number_pepper_version=identity.hash_id_number("110101199001011234")[0],
            id_number_masked="1101**********1234",
            symptoms="Sore throat",
            allergies="none",
            current_medication="none",
            requested_at=now - timedelta(hours=3),
            doctor_id=doctor.id,
            claimed_at=now - timedelta(hours=3),
            items=[],
            refills=0,
            issued_at=now - timedelta(hours=3),
            expires_at=now - timedelta(hours=1),
            signed_payload=b"{}",
            signature=b"\x00" * 64,
            fills_used=0,
        )
        s.add(p)
        s.flush()
        return p.id


def test_tasks_run_once_per_period(committed):
    pid = _committed_expired_prescription()
    assert tasks.expire_issued() == 1
    assert tasks.expire_issued() is None  # a second beat in the same period does nothing
    with session_scope() as s:
        assert s.get(Prescription, pid).status is PrescriptionStatus.EXPIRED
        expired = s.scalars(
            select(PrescriptionAudit.action).where(
                PrescriptionAudit.prescription_id == pid, PrescriptionAudit.action == "expired"
            )
        ).all()
        assert expired == ["expired"]  # the sweep ran once


def test_beat_schedules_the_sweeps():
    from o2o.worker import app

    assert "prescriptions.tasks" in app.conf.include
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {
        "prescriptions.escalate_unclaimed",
        "prescriptions.flag_unreviewed",
        "prescriptions.expire_issued",
    } <= scheduled
