"""Doctors claiming one request at the same moment: exactly one wins, the others get 409.

Real transactions on the real application (each request commits on its own connection), so the
database, not the test's shared session, decides the race.
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o.users.models import Role
from prescriptions import requests
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.schemas import PrescriptionRequestIn
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import API, make_rx_order

DOCTORS = 6


def test_concurrent_claims_one_winner(engine, committed):
    from main import create_app

    with Session(engine, expire_on_commit=False) as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        lot = make_lot(s, store, product)
        patient = make_user(s, role=Role.PATIENT)
        doctors = [make_user(s, role=Role.DOCTOR) for _ in range(DOCTORS)]
        order = make_rx_order(s, patient, store, [(product, 1, lot)])
        body = PrescriptionRequestIn(
            order_id=order.id,
            patient_name="Li Wei",
            id_number="110101199001011234",
            symptoms="cough",
            allergies="none",
            current_medication="none",
        )
        pid = requests.request_prescription(s, patient, body).id
        s.commit()

    app = create_app()
    barrier = threading.Barrier(DOCTORS)

    def claim(doctor):
        with TestClient(app, raise_server_exceptions=False) as c:
            barrier.wait(timeout=30)
            return doctor.id, c.post(f"{API}/prescriptions/{pid}/claim", headers=auth(doctor))

    with ThreadPoolExecutor(DOCTORS) as pool:
        results = list(pool.map(claim, doctors))

    codes = sorted(r.status_code for _, r in results)
    assert codes == [200] + [409] * (DOCTORS - 1), [r.text for _, r in results]
    winner = next(doctor_id for doctor_id, r in results if r.status_code == 200)
    losers = [r for _, r in results if r.status_code == 409]
    assert {r.json()["error"]["code"] for r in losers} == {"claimed_by_another_doctor"}

    with Session(engine) as s:
        p = s.get(Prescription, uuid.UUID(str(pid)))
        assert p.status.value == "claimed" and p.doctor_id == winner
        claims = s.scalar(
            select(func.count())
            .select_from(PrescriptionAudit)
            .where(PrescriptionAudit.action == "claimed")
        )
        assert claims == 1
