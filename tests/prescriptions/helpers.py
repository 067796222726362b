"""Prescription-only orders and doctors with keys for the prescription tests (plain functions,
flushed rows; stores, products and lots come from tests.factories), and the API steps of the
prescription flow."""

import base64
import itertools
import secrets
import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from o2o.orders.models import (
    Fulfillment,
    LotAllocation,
    Order,
    OrderLine,
    OrderStatus,
)
from o2o.users.models import Role, User
from prescriptions import signing
from stores.models import Lot, Product, Store
from tests.factories import auth, make_user

_seq = itertools.count(1)
API = "/api/v1"

# Smallest files whose first bytes prove their type.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PDF = b"%PDF-1.7\n" + b"0" * 64
EXE = b"MZ\x90\x00" + b"\x00" * 64


def make_rx_order(
    session: Session,
    patient: User,
    store: Store,
    lines: list[tuple[Product, int, Lot]],
    *,
    status: OrderStatus = OrderStatus.AWAITING_PRESCRIPTION,
) -> Order:
    """An order as checkout leaves it: lines, allocations, and the lots' reserved raised."""
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        store_id=store.id,
        status=status,
        fulfillment=Fulfillment.PICKUP,
        requested_fulfillment="pickup",
        routing_reason="Pickup at the nearest store that has everything.",
        currency="CNY",
        subtotal_minor=sum(lot.price_minor * qty for _, qty, lot in lines),
        pickup_code=secrets.token_hex(3),
        delivery_code=secrets.token_hex(3),
    )
    session.add(order)
    session.flush()
    for product, qty, lot in lines:
        line = OrderLine(
            order_id=order.id,
            product_id=product.id,
            quantity=qty,
            price_minor=lot.price_minor,
            rx_only=product.rx_only,
        )
        session.add(line)
        session.flush()
        session.add(LotAllocation(order_line_id=line.id, lot_id=lot.id, quantity=qty))
        lot.reserved += qty
    session.flush()
    session.expire(order, ["lines"])
    return order


@dataclass
class Doctor:
    user: User
    private_key: Ed25519PrivateKey
    key_id: int | None = None
    headers: dict = field(default_factory=dict)


def make_doctor_with_key(client: TestClient, db: Session, admin: User, **kw) -> Doctor:
    """A doctor whose key (made by the signing module) was registered and approved via the API."""
    return key_approved(client, make_user(db, role=Role.DOCTOR, **kw), admin)


def key_approved(client: TestClient, user: User, admin: User) -> Doctor:
    """Give an existing doctor a key, registered, proved and approved via the API."""
    doctor = Doctor(user=user, private_key=signing.generate_private_key(), headers=auth(user))
    r = client.post(
        f"{API}/doctors/me/keys",
        json={"public_key": signing.public_key_b64(doctor.private_key)},
        headers=doctor.headers,
    )
    assert r.status_code == 201, r.text
    doctor.key_id = r.json()["id"]
    prove_key(client, doctor.headers, doctor.private_key, r.json())
    r = client.post(f"{API}/admin/doctor-keys/{doctor.key_id}/approve", headers=auth(admin))
    assert r.status_code == 200, r.text
    return doctor


def prove_key(
    client: TestClient, headers: dict, private_key: Ed25519PrivateKey, registered: dict
) -> dict:
    """Sign a registered key's challenge with its private key and send the proof."""
    payload = signing.b64decode(registered["challenge"]["payload"])
    r = client.post(
        f"{API}/doctors/me/keys/{registered['id']}/proof",
        json={"signature": signing.b64encode(signing.sign(private_key, payload))},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["proved_at"] is not None
    return r.json()


def request_body(order: Order, **overrides) -> dict:
    body = {
        "order_id": str(order.id),
        "patient_name": "Li Wei",
        "id_number": "110101199001011234",
        "symptoms": "Sore throat and fever for three days",
        "allergies": "none",
        "current_medication": "none",
    }
    body.update(overrides)
    return body


def request_rx(client: TestClient, patient: User, order: Order, **overrides) -> dict:
    r = client.post(
        f"{API}/prescriptions", json=request_body(order, **overrides), headers=auth(patient)
    )
    assert r.status_code == 201, r.text
    return r.json()


def items_for(*lines: tuple[Product, int], duration_days: int = 7) -> list[dict]:
    return [
        {
            "product_id": product.id,
            "quantity": qty,
            "dose": "500 mg",
            "frequency": "three times a day",
            "duration_days": duration_days,
        }
        for product, qty in lines
    ]


def sign_payload(doctor: Doctor, payload_b64: str) -> str:
    return signing.b64encode(signing.sign(doctor.private_key, base64.b64decode(payload_b64)))


def claim_and_issue(
    client: TestClient,
    doctor: Doctor,
    pid: str,
    items: list[dict],
    *,
    refills: int = 0,
    valid_hours: int | None = None,
) -> dict:
    """Claim, fetch the payload, sign it with the doctor's key and issue; return the issue reply."""
    r = client.post(f"{API}/prescriptions/{pid}/claim", headers=doctor.headers)
    assert r.status_code == 200, r.text
    payload = prepare(client, doctor, pid, items, refills=refills, valid_hours=valid_hours)
    r = client.post(
        f"{API}/prescriptions/{pid}/issue",
        json={"payload": payload, "signature": sign_payload(doctor, payload)},
        headers=doctor.headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def prepare(
    client: TestClient,
    doctor: Doctor,
    pid: str,
    items: list[dict],
    *,
    refills: int = 0,
    valid_hours: int | None = None,
) -> str:
    body: dict = {"items": items, "refills": refills}
    if valid_hours is not None:
        body["valid_hours"] = valid_hours
    r = client.post(f"{API}/prescriptions/{pid}/signing-payload", json=body, headers=doctor.headers)
    assert r.status_code == 200, r.text
    return r.json()["payload"]
