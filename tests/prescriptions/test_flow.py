"""The whole path: patient request -> doctor claims, signs, issues -> pharmacist approves ->
the order is released; and the two ways it ends early (doctor declines, pharmacist rejects)."""

import base64
import json
import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from o2o.orders.models import Order, OrderStatus
from o2o.outbox import OutboxEvent
from o2o.users.models import Role
from prescriptions import identity, signing
from prescriptions.cli import app as doctor_cli
from prescriptions.models import Prescription
from tests.factories import auth, make_user, pay_through, payment_app
from tests.prescriptions.helpers import (
    API,
    PNG,
    claim_and_issue,
    items_for,
    request_body,
    request_rx,
)


def _events(db: Session, pid: str) -> list[str]:
    return list(
        db.scalars(
            select(OutboxEvent.event_type)
            .where(OutboxEvent.aggregate_id == pid)
            .order_by(OutboxEvent.event_type)
        )
    )


def _stock(db: Session, lot) -> tuple[int, int]:
    db.expire(lot)
    return lot.on_hand, lot.reserved


def test_patient_doctor_pharmacist_release_through_the_real_checkout(client, db, world, tmp_path):
    # The doctor makes a key pair with the command-line tool, registers the public key and
    # proves holding the private key by signing the challenge with the same tool; an admin
    # approves the key.
    key_file = tmp_path / "dr-wang.key"
    made = CliRunner().invoke(doctor_cli, ["keygen", "--out", str(key_file)])
    assert made.exit_code == 0, made.output
    dr = make_user(db, role=Role.DOCTOR, name="Dr Wang")
    r = client.post(
        f"{API}/doctors/me/keys", json={"public_key": made.stdout.strip()}, headers=auth(dr)
    )
    assert r.status_code == 201 and r.json()["status"] == "pending"
    key_id = r.json()["id"]
    signed = CliRunner().invoke(
        doctor_cli,
        ["sign", "--key", str(key_file), "--payload", r.json()["challenge"]["payload"]],
    )
    assert signed.exit_code == 0, signed.output
    r = client.post(
        f"{API}/doctors/me/keys/{key_id}/proof",
        json={"signature": signed.stdout.strip()},
        headers=auth(dr),
    )
    assert r.status_code == 200 and r.json()["proved_at"] is not None
    r = client.post(f"{API}/admin/doctor-keys/{key_id}/approve", headers=auth(world.admin))
    assert r.json()["status"] == "active"

    # The patient places the order through checkout and pays: an Rx cart then waits for a
    # prescription.
    payment_app(db)
    r = client.post(
        f"{API}/orders",
        json={
            "items": [
                {"product_id": world.rx.id, "quantity": 2},
                {"product_id": world.otc.id, "quantity": 1},
            ],
            "location": {"lat": 31.231, "lon": 121.47},
            "fulfillment": "pickup",
            "store_id": world.store.id,
        },
        headers=auth(world.patient),
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "awaiting_payment"
    assert pay_through(client, db, r.json()["id"]).status_code == 200
    order_json = client.get(f"{API}/orders/{r.json()['id']}", headers=auth(world.patient)).json()
    assert order_json["status"] == "awaiting_prescription"
    assert order_json["prescription_id"] is None
    order_id = order_json["id"]
    assert _stock(db, world.rx_lot) == (20, 2)

    # Request with a photo of a paper prescription (multipart).
    body = request_body(db.get(Order, uuid.UUID(order_id)))
    r = client.post(
        f"{API}/prescriptions",
        data=body,
        files={"attachment": ("scan.png", PNG, "image/png")},
        headers=auth(world.patient),
    )
    assert r.status_code == 201, r.text
    p = r.json()
    pid = p["id"]
    assert p["status"] == "requested"
    assert p["order_id"] == order_id
    assert p["patient"]["id_number_masked"] == "1101**********1234"
    assert "110101199001011234" not in r.text
    assert p["attachment"]["content_type"] == "image/png"
    # Stored as a keyed hash only: the number appears nowhere in the row.
    stored = db.get(Prescription, uuid.UUID(pid))
    assert (stored.id_number_pepper_version, stored.id_number_hmac) == identity.hash_id_number(
        "1101 0119 9001 0112 34"
    )
    row = db.scalar(
        text("SELECT row_to_json(p)::text FROM prescriptions p WHERE id = :id"), {"id": pid}
    )
    assert "110101199001011234" not in row

    # The order now names its prescription.
    r = client.get(f"{API}/orders/{order_id}", headers=auth(world.patient))
    assert r.json()["prescription_id"] == pid

    # The doctor sees it in the queue without the patient's identity, claims, signs and issues.
    r = client.get(f"{API}/prescriptions/queue", headers=auth(dr))
    assert r.status_code == 200
    mine = [i for i in r.json()["items"] if i["id"] == pid]
    assert mine and mine[0]["overdue"] is False and mine[0]["has_attachment"] is True
    assert "patient" not in mine[0] and "id_number_masked" not in json.dumps(mine[0])

    r = client.get(f"{API}/prescriptions/{pid}/attachment", headers=auth(dr))
    assert r.status_code == 404  # not claimed yet: not the doctor's to read

    r = client.post(f"{API}/prescriptions/{pid}/claim", headers=auth(dr))
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    r = client.get(f"{API}/prescriptions/{pid}/attachment", headers=auth(dr))
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"

    r = client.post(
        f"{API}/prescriptions/{pid}/signing-payload",
        json={"items": items_for((world.rx, 2), duration_days=5), "refills": 0, "valid_hours": 24},
        headers=auth(dr),
    )
    assert r.status_code == 200, r.text
    payload = r.json()["payload"]
    document = json.loads(base64.b64decode(payload))
    assert base64.b64decode(payload) == signing.canonical_bytes(document)
    assert document["prescription_id"] == pid
    assert document["patient"] == {
        "id": world.patient.id,
        "legal_name": "Li Wei",
        "id_number_masked": "1101**********1234",
    }
    assert document["doctor"] == {
        "id": dr.id,
        "name": "Dr Wang",
        "key_id": key_id,
    }
    assert document["items"][0]["quantity"] == 2
    assert document["refills"] == 0
    assert set(document["validity"]) == {"issued_at", "expires_at"}

    signed = CliRunner().invoke(doctor_cli, ["sign", "--key", str(key_file), "--payload", payload])
    assert signed.exit_code == 0, signed.output
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": payload, "signature": signed.stdout.strip()},
        headers=auth(dr),
    )
    assert r.status_code == 200, r.text
    issued = r.json()
    assert issued["status"] == "issued"
    assert issued["items"][0]["product_id"] == world.rx.id

    # The store's pharmacist sees it waiting, reviews and approves: the order is released.
    r = client.get(f"{API}/prescriptions/queue", headers=auth(world.pharmacist))
    assert [i["id"] for i in r.json()["items"]] == [pid]
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve", "reason": "Checked ID and dosage"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["order_status"] == "released"
    r = client.get(f"{API}/orders/{order_id}", headers=auth(world.patient))
    assert r.json()["status"] == "released"
    assert r.json()["released_at"] is not None
    # Released, still reserved: stock leaves the shelf only when the order completes.
    assert _stock(db, world.rx_lot) == (20, 2)

    r = client.get(f"{API}/prescriptions/{pid}/audit", headers=auth(world.patient))
    steps = [
        (e["action"], e["actor_role"], e["from_status"], e["to_status"]) for e in r.json()["items"]
    ]
    assert steps == [
        ("requested", "patient", None, "requested"),
        ("claimed", "doctor", "requested", "claimed"),
        ("issued", "doctor", "claimed", "issued"),
        ("approved", "pharmacist", "issued", "approved"),
    ]
    assert sorted(_events(db, pid)) == [
        "prescription.approved",
        "prescription.issued",
        "prescription.requested",
    ]

    # The store prepares and hands it over: the prescription is used up.
    staff = auth(world.pharmacist)
    assert client.post(f"{API}/orders/{order_id}/prepare", headers=staff).status_code == 200
    assert client.post(f"{API}/orders/{order_id}/ready", headers=staff).status_code == 200
    r = client.post(
        f"{API}/orders/{order_id}/handover",
        json={"pickup_code": order_json["pickup_code"]},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient))
    assert r.json()["status"] == "dispensed" and r.json()["dispensed_at"] is not None
    audit = client.get(f"{API}/prescriptions/{pid}/audit", headers=auth(world.admin)).json()
    assert audit["items"][-1]["action"] == "dispensed"
    assert audit["items"][-1]["actor_id"] == world.pharmacist.id


def test_approval_releases_an_order_built_directly(client, db, world):
    order = world.order(db, rx_qty=2, otc_qty=3)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    db.expire(order)
    assert order.status is OrderStatus.RELEASED
    assert db.get(Prescription, order_prescription(db, order)).fills_used == 1


def order_prescription(db, order):
    return db.scalar(select(Prescription.id).where(Prescription.order_id == order.id))


def test_doctor_declines_cancels_the_order_and_frees_stock(client, db, world):
    order = world.order(db, rx_qty=3)
    assert _stock(db, world.rx_lot) == (20, 3)
    pid = request_rx(client, world.patient, order)["id"]
    client.post(f"{API}/prescriptions/{pid}/claim", headers=world.doctor.headers)

    r = client.post(f"{API}/prescriptions/{pid}/decline", json={}, headers=world.doctor.headers)
    assert r.status_code == 422  # a reason is required
    r = client.post(
        f"{API}/prescriptions/{pid}/decline",
        json={"reason": "Needs an in-person examination"},
        headers=world.doctor.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "declined"
    assert r.json()["decline_reason"] == "Needs an in-person examination"
    db.expire(order)
    assert order.status is OrderStatus.CANCELLED
    assert "in-person" in order.cancel_reason
    assert _stock(db, world.rx_lot) == (20, 0)
    assert "prescription.declined" in _events(db, pid)


def test_pharmacist_rejects_with_reason_cancels_the_order_and_frees_stock(client, db, world):
    order = world.order(db, rx_qty=2)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(client, world.doctor, pid, items_for((world.rx, 2)))

    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "reject"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 422  # a rejection needs a reason
    db.expire(order)
    assert order.status is OrderStatus.AWAITING_PRESCRIPTION

    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "reject", "reason": "Name does not match the ID shown at the counter"},
        headers=auth(world.pharmacist),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert r.json()["order_status"] == "cancelled"
    db.expire(order)
    assert order.status is OrderStatus.CANCELLED
    assert _stock(db, world.rx_lot) == (20, 0)
    assert "prescription.rejected" in _events(db, pid)
    audit = client.get(f"{API}/prescriptions/{pid}/audit", headers=auth(world.pharmacist)).json()
    assert audit["items"][-1]["action"] == "rejected"
    assert audit["items"][-1]["reason"].startswith("Name does not match")


def test_order_cancelled_by_patient_closes_the_open_request(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    from o2o.order_flow import store_actions
    from o2o.orders import lifecycle

    locked = lifecycle.lock_order(db, order.id)
    store_actions.cancel_order(db, locked, reason="Changed my mind", actor_id=world.patient.id)
    db.flush()
    r = client.get(f"{API}/prescriptions/{pid}", headers=auth(world.patient))
    assert r.json()["status"] == "cancelled"
    # It left the doctors' queue.
    queue = client.get(f"{API}/prescriptions/queue", headers=world.doctor.headers).json()
    assert pid not in [i["id"] for i in queue["items"]]
