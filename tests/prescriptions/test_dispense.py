"""`GET /orders/{id}/fhir/dispense`: what a completed order handed over, as FHIR R4
MedicationDispense that a FHIR model library accepts, with the lots the order's lines actually
took, the prescription that authorized them and the pharmacist; and the prescription's audit
trail recording the dispense once, with the same lots.

fhir.resources ships R4B (4.3) as its R4 line (see test_fhir_export.py); MedicationDispense,
Medication, Organization and Bundle have the same elements used here in R4 and R4B.
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationdispense import MedicationDispense
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o.orders.models import LotAllocation, Order, OrderStatus
from o2o.users.models import Role
from prescriptions import service
from prescriptions.models import Prescription, PrescriptionAudit
from prescriptions.workflow import PrescriptionStatus
from tests.factories import auth, make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import (
    API,
    claim_and_issue,
    items_for,
    key_approved,
    make_rx_order,
    request_rx,
)


def _two_lot_order(db, world, *, otc_qty: int = 0):
    """An order of 3 packs of the prescription medicine: 2 from a shorter-dated lot, 1 from a
    longer-dated one (as FEFO leaves it when the first lot runs short)."""
    short = make_lot(db, world.store, world.rx, on_hand=2, days=200, lot_number="RX-SHORT")
    long = make_lot(db, world.store, world.rx, on_hand=10, days=500, lot_number="RX-LONG")
    lines = [(world.rx, 2, short)]
    if otc_qty:
        lines.append((world.otc, otc_qty, world.otc_lot))
    order = make_rx_order(db, world.patient, world.store, lines)
    line = next(li for li in order.lines if li.product_id == world.rx.id)
    line.quantity = 3
    db.add(LotAllocation(order_line_id=line.id, lot_id=long.id, quantity=1))
    long.reserved += 1
    db.flush()
    db.expire(line, ["allocations"])
    return order, short, long


def _steps(client, db, pharmacist, order):
    """Prepare, ready and hand over at the counter (the pickup code the patient shows)."""
    order.pickup_code = "123456"
    db.flush()
    staff = auth(pharmacist)
    for step, body in (("prepare", None), ("ready", None), ("handover", {"pickup_code": "123456"})):
        r = client.post(f"{API}/orders/{order.id}/{step}", json=body, headers=staff)
        assert r.status_code == 200, r.text


def _approved(client, world, order, qty: int = 3) -> str:
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, qty), duration_days=10))
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    return pid


def _dispenses(body: dict) -> list[dict]:
    return [
        e["resource"]
        for e in body["entry"]
        if e["resource"]["resourceType"] == "MedicationDispense"
    ]


def test_dispense_bundle_validates_with_lots_prescription_and_pharmacist(client, db, world):
    order, short, long = _two_lot_order(db, world, otc_qty=1)
    pid = _approved(client, world, order)
    r = client.get(f"{API}/orders/{order.id}/fhir/dispense", headers=auth(world.patient))
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_completed"
    assert r.json()["error"]["details"] == {"status": "released"}

    _steps(client, db, world.pharmacist, order)
    r = client.get(f"{API}/orders/{order.id}/fhir/dispense", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "collection" and bundle.identifier.value == str(order.id)

    # The prescription's own export: the MedicationRequest the dispenses must point at.
    rx = client.get(f"{API}/prescriptions/{pid}/fhir", headers=auth(world.patient)).json()
    request = next(
        e["resource"] for e in rx["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    )

    dispenses = [MedicationDispense.model_validate(d) for d in _dispenses(r.json())]
    # Only the prescription item by default: one dispense per lot it was handed over from.
    assert len(dispenses) == 2
    db.expire_all()
    completed_at = db.get(Order, order.id).completed_at
    by_lot = {}
    for d in dispenses:
        medication = d.contained[0]
        assert d.medicationReference.reference == f"#{medication.id}"
        by_lot[medication.batch.lotNumber] = (medication.batch.expirationDate, d)
        assert medication.code.coding[0].code == world.rx.gtin
        assert d.status == "completed"
        assert d.whenHandedOver == completed_at.replace(microsecond=0)
        assert d.substitution.wasSubstituted is False
        assert d.type.coding[0].code == "FF"
        (auth_rx,) = d.authorizingPrescription
        assert auth_rx.reference == f"MedicationRequest/{request['id']}"
        assert auth_rx.identifier.value == request["identifier"][0]["value"]
        roles = {p.actor.reference.split(":")[0] for p in d.performer}
        assert roles == {"urn"} and len(d.performer) == 2
    assert {lot: (exp, d.quantity.value) for lot, (exp, d) in by_lot.items()} == {
        "RX-SHORT": (short.expiry_date, 2),
        "RX-LONG": (long.expiry_date, 1),
    }
    practitioner = next(
        e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Practitioner"
    )
    assert practitioner["name"][0]["text"] == world.pharmacist.name

    # Any line on request: the lozenges too, with no prescription behind them.
    r = client.get(
        f"{API}/orders/{order.id}/fhir/dispense",
        params={"all_lines": "true"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    otc = [
        d
        for d in _dispenses(r.json())
        if d["contained"][0]["batch"]["lotNumber"] == world.otc_lot.lot_number
    ]
    assert len(otc) == 1 and "authorizingPrescription" not in otc[0]
    assert otc[0]["substitution"] == {"wasSubstituted": False}

    # The audit trail records the dispense once, with the same lots.
    entries = db.scalars(
        select(PrescriptionAudit).where(
            PrescriptionAudit.prescription_id == uuid.UUID(pid),
            PrescriptionAudit.action == "dispensed",
        )
    ).all()
    assert len(entries) == 1
    (handed,) = entries[0].details["handed_over"]
    assert handed["product_id"] == world.rx.id and handed["quantity"] == 3
    assert sorted((x["lot_number"], x["expiry_date"], x["quantity"]) for x in handed["lots"]) == [
        ("RX-LONG", long.expiry_date.isoformat(), 1),
        ("RX-SHORT", short.expiry_date.isoformat(), 2),
    ]
    assert entries[0].details["order_id"] == str(order.id)


def test_dispense_record_is_for_the_order_s_patient_and_store_staff_only(client, db, world):
    order, _, _ = _two_lot_order(db, world)
    _approved(client, world, order)
    _steps(client, db, world.pharmacist, order)
    url = f"{API}/orders/{order.id}/fhir/dispense"
    for user in (world.patient, world.pharmacist, world.admin):
        assert client.get(url, headers=auth(user)).status_code == 200
    for user in (world.other_patient, world.other_pharmacist):
        r = client.get(url, headers=auth(user))
        assert r.status_code == 404 and r.json()["error"]["code"] == "order_not_found"
    assert client.get(url, headers=auth(world.courier)).status_code == 403
    assert client.get(url).status_code == 401
    r = client.get(f"{API}/orders/{uuid.uuid4()}/fhir/dispense", headers=auth(world.admin))
    assert r.status_code == 404


def test_an_over_the_counter_order_has_an_empty_record_unless_every_line_is_asked(
    client, db, world
):
    order = make_rx_order(
        db, world.patient, world.store, [(world.otc, 2, world.otc_lot)], status=OrderStatus.RELEASED
    )
    _steps(client, db, world.pharmacist, order)
    r = client.get(f"{API}/orders/{order.id}/fhir/dispense", headers=auth(world.patient))
    assert r.status_code == 200
    assert _dispenses(r.json()) == []
    r = client.get(
        f"{API}/orders/{order.id}/fhir/dispense?all_lines=true", headers=auth(world.patient)
    )
    (d,) = _dispenses(r.json())
    MedicationDispense.model_validate(d)
    assert d["quantity"]["value"] == 2 and "authorizingPrescription" not in d


def test_a_second_dispensed_entry_is_refused_by_the_database(client, db, world):
    order, _, _ = _two_lot_order(db, world)
    pid = _approved(client, world, order)
    _steps(client, db, world.pharmacist, order)
    p = db.get(Prescription, uuid.UUID(pid))
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(
            PrescriptionAudit(
                prescription_id=p.id,
                action="dispensed",
                actor_role="system",
                from_status=PrescriptionStatus.APPROVED,
                to_status=PrescriptionStatus.DISPENSED,
            )
        )
        db.flush()


HANDLERS = 4


def test_completion_handled_twice_at_once_records_the_dispense_once(engine, committed):
    """The completion's subscriber run again, concurrently, on separate connections (as a
    redelivered event would be): the prescription is dispensed, and audited, exactly once."""
    from fastapi.testclient import TestClient

    from main import create_app

    with Session(engine, expire_on_commit=False) as s:
        store = make_store(s)
        product = make_product(s, rx_only=True)
        lot = make_lot(s, store, product, on_hand=10, days=400)
        patient = make_user(s, role=Role.PATIENT)
        admin = make_user(s, role=Role.ADMIN)
        pharmacist = make_user(s, role=Role.PHARMACIST, store_ids=[store.id])
        doctor_user = make_user(s, role=Role.DOCTOR)
        order = make_rx_order(s, patient, store, [(product, 2, lot)])
        order.pickup_code = "123456"
        s.commit()

    app = create_app()
    with TestClient(app, raise_server_exceptions=False) as c:
        doctor = key_approved(c, doctor_user, admin)
        pid = request_rx(c, patient, order)["id"]
        claim_and_issue(c, doctor, pid, items_for((product, 2)))
        r = c.post(
            f"{API}/prescriptions/{pid}/review",
            json={"decision": "approve"},
            headers=auth(pharmacist),
        )
        assert r.status_code == 200, r.text
        for step in ("prepare", "ready"):
            assert c.post(f"{API}/orders/{order.id}/{step}", headers=auth(pharmacist)).is_success

    barrier = threading.Barrier(HANDLERS)

    def handle(_):
        with Session(engine) as s:
            o = s.get(Order, order.id)
            barrier.wait(timeout=30)
            service.mark_dispensed(s, o, actor_id=pharmacist.id)
            s.commit()

    with ThreadPoolExecutor(HANDLERS) as pool:
        list(pool.map(handle, range(HANDLERS)))

    with Session(engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(PrescriptionAudit)
                .where(
                    PrescriptionAudit.prescription_id == uuid.UUID(pid),
                    PrescriptionAudit.action == "dispensed",
                )
            )
            == 1
        )
        assert s.get(Prescription, uuid.UUID(pid)).status is PrescriptionStatus.DISPENSED
