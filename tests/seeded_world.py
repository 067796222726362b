"""One small world with a row behind every kind of id the API takes, and a stranger for each role:
the fuzzing and access-matrix tests start from it.

Store A has everything: a pharmacist, stock, a pickup order and a delivery order of `patient` (the
delivery one claimed by `courier`), and a prescription-only order whose prescription request (with
a photo) is claimed by `doctor`. Store B has its own pharmacist and nothing else of interest.
"""

from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dispatch.models import Job
from o2o import clock
from o2o.orders.models import Order, OrderStatus, SplitOrder
from o2o.users.models import Role, User
from stores.models import Lot, Product, Store
from stores.pickup_points import PickupPoint
from tests import factories
from tests.dispatch import helpers as dispatch_helpers
from tests.factories import auth, make_lot, make_order, make_product, make_store, make_user
from tests.pickup_points import helpers as pickup_point_helpers
from tests.prescriptions import helpers as rx_helpers

API = "/api/v1"


@dataclass
class World:
    store: Store
    other_store: Store
    otc: Product
    rx: Product
    otc_lot: Lot
    admin: User
    patient: User
    other_patient: User
    pharmacist: User
    other_pharmacist: User
    courier: User
    other_courier: User
    doctor: rx_helpers.Doctor
    other_doctor: rx_helpers.Doctor
    pickup_order: Order
    delivery_order: Order
    rx_order: Order
    prescription_id: str
    job: Job
    webhook_id: str
    payment_app_id: str = ""
    # A split order of `patient` (one part, at store A).
    split_order_id: str = ""
    # A community pickup point of `store`, its leader, a leader of another point, and an order
    # waiting at the point for `patient`.
    leader: User | None = None
    other_leader: User | None = None
    pickup_point: PickupPoint | None = None
    point_order: Order | None = None

    def user(self, name: str) -> User | None:
        """The user playing `name` in the matrix (None: anonymous)."""
        if name == "anonymous":
            return None
        found = getattr(self, name)
        return found.user if isinstance(found, rx_helpers.Doctor) else found


def build_world(db: Session, client: TestClient) -> World:
    """Seed the world through factories and, where the API is the only honest way, the API."""
    at = factories.SHANGHAI
    store = make_store(db, at=at, zone_half_side_m=dispatch_helpers.DELIVERY_ZONE_M)
    other_store = make_store(
        db,
        at=factories.offset(20_000, 0),
        zone_half_side_m=dispatch_helpers.DELIVERY_ZONE_M,
    )
    admin = make_user(db, role=Role.ADMIN)
    patient = make_user(db, role=Role.PATIENT)
    other_patient = make_user(db, role=Role.PATIENT)
    pharmacist = make_user(db, role=Role.PHARMACIST, store_ids=[store.id])
    other_pharmacist = make_user(db, role=Role.PHARMACIST, store_ids=[other_store.id])
    courier = dispatch_helpers.make_courier(db, home_store=store, at=factories.offset(300))
    other_courier = dispatch_helpers.make_courier(
        db, home_store=other_store, at=factories.offset(20_300)
    )
    otc = make_product(db)
    rx = make_product(db, rx_only=True)
    otc_lot = make_lot(db, store, otc, on_hand=500)
    rx_lot = make_lot(db, store, rx, on_hand=50, days=400)

    doctor = rx_helpers.make_doctor_with_key(client, db, admin, name="Dr Zhang")
    other_doctor = rx_helpers.make_doctor_with_key(client, db, admin, name="Dr Chen")

    pickup_order = make_order(db, patient, store, [(otc_lot, 2)])
    split_order = SplitOrder(patient_id=patient.id, created_at=clock.now())
    db.add(split_order)
    db.flush()
    split_part = make_order(db, patient, store, [(otc_lot, 1)])
    split_part.split_order_id, split_part.split_position = split_order.id, 0
    db.flush()
    delivery_order = dispatch_helpers.make_delivery_order(
        db, store, patient=patient, dropoff=factories.offset(1500, 800)
    )
    assert delivery_order.status is OrderStatus.READY
    here = factories.offset(300)
    r = client.post(
        f"{API}/dispatch/claim", json={"lat": here[0], "lon": here[1]}, headers=auth(courier)
    )
    assert r.status_code == 200, r.text
    job = db.get(Job, r.json()["id"])

    rx_order = rx_helpers.make_rx_order(db, patient, store, [(rx, 2, rx_lot)])
    r = client.post(
        f"{API}/prescriptions",
        data=rx_helpers.request_body(rx_order),
        files={"attachment": ("scan.png", rx_helpers.PNG, "image/png")},
        headers=auth(patient),
    )
    assert r.status_code == 201, r.text
    prescription_id = r.json()["id"]
    r = client.post(f"{API}/prescriptions/{prescription_id}/claim", headers=doctor.headers)
    assert r.status_code == 200, r.text

    r = client.post(
        f"{API}/admin/webhooks",
        json={"url": "https://hooks.example.com/o2o", "event_types": ["order.completed"]},
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    webhook_id = r.json()["id"]
    r = client.post(
        f"{API}/admin/payment-apps",
        json={"name": "Matrix payment app", "webhook_url": "https://pay.example.com/o2o"},
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    payment_app_id = r.json()["id"]
    leader = make_user(db, role=Role.LEADER)
    other_leader = make_user(db, role=Role.LEADER)
    pickup_point = pickup_point_helpers.make_point(db, store, leader=leader)
    pickup_point_helpers.make_point(db, store, leader=other_leader, at=factories.offset(0, 1500))
    point_order = pickup_point_helpers.waiting_at_point(db, pickup_point, patient, otc_lot)
    return World(
        leader=leader,
        other_leader=other_leader,
        pickup_point=pickup_point,
        point_order=point_order,
        store=store,
        other_store=other_store,
        otc=otc,
        rx=rx,
        otc_lot=otc_lot,
        admin=admin,
        patient=patient,
        other_patient=other_patient,
        pharmacist=pharmacist,
        other_pharmacist=other_pharmacist,
        courier=courier,
        other_courier=other_courier,
        doctor=doctor,
        other_doctor=other_doctor,
        pickup_order=pickup_order,
        delivery_order=delivery_order,
        rx_order=rx_order,
        prescription_id=prescription_id,
        job=job,
        webhook_id=str(webhook_id),
        payment_app_id=str(payment_app_id),
        split_order_id=str(split_order.id),
    )


def seed(db: Session, client: TestClient) -> World:
    """Seed the world for a test (the body of each module's `world` fixture)."""
    return build_world(db, client)
