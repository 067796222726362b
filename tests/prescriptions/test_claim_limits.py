"""Claim caps and claim timeouts: a doctor holds at most N open claims (proved with the claims
racing for real), and a claim the doctor did not act on in time goes back to the queue."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.users.models import Role
from prescriptions import requests, sweeps
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.schemas import PrescriptionRequestIn
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import API, make_rx_order, request_rx

REQUESTS = 4


def test_concurrent_claims_by_one_doctor_never_pass_the_cap(engine, committed, monkeypatch):
    from main import create_app

    monkeypatch.setattr(get_settings(), "prescription_max_open_claims", 1)
    with Session(engine, expire_on_commit=False) as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        lot = make_lot(s, store, product)
        doctor = make_user(s, role=Role.DOCTOR)
        pids = []
        for _ in range(REQUESTS):
            patient = make_user(s, role=Role.PATIENT)
            order = make_rx_order(s, patient, store, [(product, 1, lot)])
            body = PrescriptionRequestIn(
                order_id=order.id,
                patient_name="Li Wei",
                id_number="110101199001011234",
                symptoms="cough",
                allergies="none",
                current_medication="none",
            )
            pids.append(requests.request_prescription(s, patient, body).id)
        s.commit()

    app = create_app()
    barrier = threading.Barrier(REQUESTS)

    def claim(pid):
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return c.post(f"{API}/prescriptions/{pid}/claim", headers=auth(doctor))

    with ThreadPoolExecutor(REQUESTS) as pool:
        results = list(pool.map(claim, pids))

    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * (REQUESTS - 1), [r.text for r in results]
    refused = {r.json()["error"]["code"] for r in results if r.status_code == 409}
    assert refused == {"too_many_open_claims"}
    with Session(engine) as s:
        held = s.scalar(
            select(func.count())
            .select_from(Prescription)
            .where(Prescription.doctor_id == doctor.id, Prescription.status == "claimed")
        )
        assert held == 1


def test_a_claim_not_acted_on_in_time_goes_back_to_the_queue(client, db, world):
    pid = request_rx(client, world.patient, world.order(db))["id"]
    r = client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers)
    assert r.status_code == 200
    timeout = get_settings().prescription_claim_timeout_minutes
    assert sweeps.return_stale_claims(db, now=clock.now() + timedelta(minutes=timeout - 1)) == 0
    assert sweeps.return_stale_claims(db, now=clock.now() + timedelta(minutes=timeout + 1)) == 1
    db.expire_all()
    p = db.get(Prescription, uuid.UUID(pid))
    assert p.status.value == "requested" and p.doctor_id is None
    returned = db.scalars(
        select(PrescriptionAudit).where(PrescriptionAudit.action == "claim_returned")
    ).all()
    assert len(returned) == 1 and returned[0].details["doctor_id"] == world.doctor.user.id
    # Another doctor may take it now.
    r = client.post(f"{API}/prescriptions/{pid}/claim", headers=world.other_doctor.headers)
    assert r.status_code == 200, r.text
