"""A small pharmacy world built through the real services (checkout, prescriptions, dispatch),
for the console tests: two stores, their pharmacists, a doctor with an approved key, and orders
in every state the pages show."""

import base64
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from dispatch import monitor
from o2o import clock
from o2o.order_flow import checkout, store_actions
from o2o.order_flow.schemas import OrderIn
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role, User
from prescriptions import doctor_keys, issuing, requests, signing
from prescriptions.schemas import PrescriptionRequestIn, SigningPayloadIn
from stores.models import Store
from tests.console.helpers import square_zone
from tests.factories import make_lot, make_product, make_store, make_user, pay, payment_app

S = OrderStatus
STORE_A = (31.2304, 121.4737)
STORE_B = (39.9042, 116.4074)


def tiny_png(width: int = 240, height: int = 150) -> bytes:
    """A real PNG (a ruled sheet of paper), so the attachment shows as an image."""
    rows = []
    for y in range(height):
        line = bytearray([0])
        for x in range(width):
            ruled = y % 18 == 0 or (x < 24 and y > 20)
            header = y < 22
            rgb = (40, 80, 160) if header else (180, 190, 210) if ruled else (250, 248, 240)
            line.extend(rgb)
        rows.append(bytes(line))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


@dataclass
class World:
    store_a: int
    store_b: int
    pharmacist_a: str
    pharmacist_b: str
    doctor: str
    patient: str
    rx_approve: str  # prescription ids, issued and waiting for review at store A
    rx_reject: str
    rx_requested: str  # waiting for a doctor
    pickup_order: str
    pickup_code: str
    at_risk_order: str
    doctor_key_pem: bytes
    extra: dict = field(default_factory=dict)


def place_order(
    session: Session, patient: User, store_id: int, items, *, delivery_at=None, now=None
):
    body = {
        "items": [{"product_id": p, "quantity": q} for p, q in items],
        "location": {"lat": STORE_A[0] + 0.001, "lon": STORE_A[1]},
        "fulfillment": "delivery" if delivery_at else "pickup",
        "store_id": store_id,
    }
    if delivery_at:
        body["delivery_address"] = {
            "location": {"lat": delivery_at[0], "lon": delivery_at[1]},
            "text": "Room 501, 8 Example Road",
        }
    payment_app(session)
    order = checkout.place_order(session, patient, OrderIn.model_validate(body), now=now)
    # Paid as the payment app pays, at the time the order was placed.
    paid_at = now or clock.now()
    with clock.use(lambda: paid_at):
        return pay(session, order)


def _request(session: Session, patient: User, order: Order, name: str, *, attachment=None):
    body = PrescriptionRequestIn(
        order_id=order.id,
        patient_name=name,
        id_number="110101199001011234",
        symptoms="Sore throat and fever for three days",
        allergies="none",
        current_medication="none",
    )
    att = requests.Attachment(attachment, "scan.png", "image/png") if attachment else None
    return requests.request_prescription(session, patient, body, att)


def _issue(
    session: Session,
    doctor: User,
    key: Ed25519PrivateKey,
    p,
    product_id: int,
    qty: int,
    refills: int = 0,
):
    issuing.claim(session, doctor, p.id)
    payload, _, _ = issuing.prepare_signing_payload(
        session,
        doctor,
        p.id,
        SigningPayloadIn(
            items=[
                {
                    "product_id": product_id,
                    "quantity": qty,
                    "dose": "1 capsule",
                    "frequency": "3 times a day",
                    "duration_days": 5,
                }
            ],
            refills=refills,
            valid_hours=24,
        ),
    )
    signature = signing.b64encode(signing.sign(key, payload))
    issuing.issue(session, doctor, p.id, signing.b64encode(payload), signature)


# Minutes from release to hand-over of past deliveries, by days ago: the SLA chart's history.
HISTORY = {6: (45, 70), 5: (50, 135, 80), 4: (60,), 3: (40, 55, 95), 2: (150, 65), 1: (35, 75)}


def _delivery_history(session: Session, patient: User, store_id: int, product, now: datetime):
    """Deliveries completed on past days, some late (with their breach), for the SLA report.

    Placed through checkout at the past time; the courier part is skipped (the orders go
    straight to out for delivery and completed, and their hand-over time is set afterwards).
    """
    store = session.get(Store, store_id)
    make_lot(session, store, product, on_hand=100)
    for days_ago, durations in HISTORY.items():
        for n, minutes in enumerate(durations):
            released = now - timedelta(days=days_ago, hours=3 + n)
            order = place_order(
                session,
                patient,
                store_id,
                [(product.id, 1)],
                delivery_at=(STORE_A[0] + 0.005 * (n + 1), STORE_A[1] - 0.004 * days_ago),
                now=released,
            )
            for status in (S.PREPARING, S.READY, S.OUT_FOR_DELIVERY):
                lifecycle.transition(session, order, status, at=released)
            lifecycle.complete(session, order)
            order.completed_at = released + timedelta(minutes=minutes)
            session.flush()
            if order.completed_at > order.sla_deadline:
                monitor.record_late_delivery(session, order, now=order.completed_at)


def build_world(session: Session) -> World:
    """Create the world and flush it (the caller commits for browser tests)."""
    store_a = make_store(
        session,
        name="Jing'an Pharmacy",
        at=STORE_A,
        zone=square_zone(*STORE_A, 0.03),
        prep_minutes=10,
        delivery_fee_minor=500,
    )
    store_b = make_store(
        session,
        name="Chaoyang Pharmacy",
        at=STORE_B,
        zone=square_zone(*STORE_B),
        delivery_fee_minor=0,
    )
    admin = make_user(session, role=Role.ADMIN)
    pharmacist_a = make_user(session, role=Role.PHARMACIST, store_ids=[store_a.id], name="Pat Lin")
    pharmacist_b = make_user(session, role=Role.PHARMACIST, store_ids=[store_b.id], name="Bo Wang")
    doctor = make_user(session, role=Role.DOCTOR, name="Dr. Li Wei")
    patient = make_user(session, role=Role.PATIENT, name="Mei Chen")

    amoxicillin = make_product(
        session, name="Amoxicillin", generic_name="amoxicillin", strength="500 mg", rx_only=True
    )
    ibuprofen = make_product(session, name="Ibuprofen", generic_name="ibuprofen", strength="200 mg")
    vitamin = make_product(session, name="Vitamin C", generic_name="ascorbic acid", strength="1 g")
    make_lot(session, store_a, amoxicillin, on_hand=30)
    make_lot(session, store_a, ibuprofen, on_hand=60)
    make_lot(session, store_a, vitamin, on_hand=4)
    make_lot(
        session,
        store_a,
        ibuprofen,
        on_hand=12,
        days=20,
    )
    make_lot(session, store_b, amoxicillin, on_hand=10)

    key = Ed25519PrivateKey.generate()
    key_row = doctor_keys.register_key(session, doctor, signing.public_key_b64(key))
    proof = signing.b64encode(signing.sign(key, key_row.proof_challenge))
    doctor_keys.prove_key(session, doctor, key_row.id, proof)
    doctor_keys.approve_key(session, admin, key_row.id)

    # Two prescription orders whose prescriptions wait for the pharmacist, one still with the
    # doctors, each through the real checkout and prescription services.
    ids = {}
    for label, qty in (("approve", 2), ("reject", 1), ("requested", 1)):
        order = place_order(session, patient, store_a.id, [(amoxicillin.id, qty)])
        p = _request(
            session,
            patient,
            order,
            "Mei Chen",
            attachment=tiny_png() if label == "approve" else None,
        )
        if label != "requested":
            # The one to approve allows a refill (the pages show refills of it).
            _issue(session, doctor, key, p, amoxicillin.id, qty, refills=int(label == "approve"))
        ids[label] = str(p.id)

    # A pickup ready at the counter.
    pickup = place_order(session, patient, store_a.id, [(ibuprofen.id, 1)])
    store_actions.prepare(session, pickup, actor_id=pharmacist_a.id)
    store_actions.mark_ready(session, pickup, actor_id=pharmacist_a.id)

    # Deliveries released a while ago: one close to its deadline (the SLA monitor flags it),
    # one fresh.
    now = clock.now()
    late = place_order(
        session,
        patient,
        store_a.id,
        [(ibuprofen.id, 2)],
        delivery_at=(STORE_A[0] + 0.012, STORE_A[1] + 0.008),
        now=now - timedelta(minutes=105),
    )
    place_order(
        session,
        patient,
        store_a.id,
        [(vitamin.id, 1)],
        delivery_at=(STORE_A[0] - 0.01, STORE_A[1] - 0.015),
    )
    session.flush()
    monitor.run(session, now=now)
    _delivery_history(
        session,
        patient,
        store_a.id,
        make_product(session, name="Oral rehydration salts", generic_name="ors", strength="sachet"),
        now,
    )

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return World(
        store_a=store_a.id,
        store_b=store_b.id,
        pharmacist_a=pharmacist_a.email,
        pharmacist_b=pharmacist_b.email,
        doctor=doctor.email,
        patient=patient.email,
        rx_approve=ids["approve"],
        rx_reject=ids["reject"],
        rx_requested=ids["requested"],
        pickup_order=str(pickup.id),
        pickup_code=pickup.pickup_code,
        at_risk_order=str(late.id),
        doctor_key_pem=pem,
        extra={"amoxicillin": amoxicillin.id, "ibuprofen": ibuprofen.id},
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
