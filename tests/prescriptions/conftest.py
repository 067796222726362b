"""Prescription fixtures: a store with its pharmacist, a second store, patients, doctors whose
Ed25519 keys were registered and approved through the API, and prescription-only stock."""

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from o2o.users.models import Role, User
from stores.models import Lot, Product, Store
from tests.factories import make_lot, make_product, make_store, make_user
from tests.prescriptions.helpers import Doctor, make_doctor_with_key, make_rx_order


@dataclass
class World:
    store: Store
    other_store: Store
    pharmacist: User
    other_pharmacist: User
    patient: User
    other_patient: User
    admin: User
    courier: User
    doctor: Doctor
    other_doctor: Doctor
    rx: Product
    otc: Product
    rx_lot: Lot
    otc_lot: Lot

    def order(self, db: Session, rx_qty: int = 2, otc_qty: int = 0, patient: User | None = None):
        lines = [(self.rx, rx_qty, self.rx_lot)]
        if otc_qty:
            lines.append((self.otc, otc_qty, self.otc_lot))
        return make_rx_order(db, patient or self.patient, self.store, lines)


@pytest.fixture
def world(db: Session, client) -> World:
    store = make_store(db, at=(31.231, 121.47))
    other_store = make_store(db, at=(31.232, 121.47))
    admin = make_user(db, role=Role.ADMIN)
    rx = make_product(db, rx_only=True)
    otc = make_product(db, rx_only=False, name="Throat lozenges", generic_name="lozenge")
    return World(
        store=store,
        other_store=other_store,
        pharmacist=make_user(db, role=Role.PHARMACIST, store_ids=[store.id]),
        other_pharmacist=make_user(db, role=Role.PHARMACIST, store_ids=[other_store.id]),
        patient=make_user(db, role=Role.PATIENT),
        other_patient=make_user(db, role=Role.PATIENT),
        admin=admin,
        courier=make_user(db, role=Role.COURIER),
        doctor=make_doctor_with_key(client, db, admin, name="Dr Zhang"),
        other_doctor=make_doctor_with_key(client, db, admin, name="Dr Chen"),
        rx=rx,
        otc=otc,
        rx_lot=make_lot(db, store, rx, on_hand=20, days=400),
        otc_lot=make_lot(db, store, otc, on_hand=20, days=400),
    )
