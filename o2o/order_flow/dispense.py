"""The dispense record of a completed order (`GET /orders/{id}/fhir/dispense`): what was handed
over, from which lots, by whom, and under which prescription, as FHIR R4 MedicationDispense.

The order flow composes it: the order record and its lot allocations (what each line actually
took), the store's lots (numbers and expiry), and the prescriptions domain's answer to "which
MedicationRequest authorized this item". The Bundle itself is built by pure code
(`fhir_dispense`).
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.order_flow import fhir_dispense
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import Role, User
from prescriptions import service as prescriptions_service
from stores.models import Lot, Product, Store

# The staff step whose actor is named as the pharmacist: the hand-over at the counter, else who
# marked it ready, else who started preparing it (a delivery is handed over by a courier).
_PHARMACIST_STEPS = (OrderStatus.COMPLETED, OrderStatus.READY, OrderStatus.PREPARING)


def _pharmacist(session: Session, order: Order) -> tuple[int, str] | None:
    actors = {e.to_status: e.actor_id for e in order.events if e.actor_id is not None}
    ids = [actors[s] for s in _PHARMACIST_STEPS if s in actors]
    if not ids:
        return None
    staff = {
        u.id: u
        for u in session.scalars(select(User).where(User.id.in_(ids)))
        if u.role is Role.PHARMACIST
    }
    for user_id in ids:
        if user_id in staff:
            return user_id, staff[user_id].name
    return None


# What an equivalent standing in for the asked product records (HL7 v3 codes): the type is always
# "EC" (equivalent composition: same active ingredient, strength, dosage form and route), the
# reason by the pharmacist's coded reason.
_REASONS = {
    "out_of_stock": ("OS", "out of stock"),
    "formulary": ("FP", "formulary policy"),
    "patient_request": ("PATRQT", "patient requested"),
}


def _substitution(line) -> fhir_dispense.Substitution | None:
    """Return what a line filled with an equivalent records, or None when it was not."""
    if line.requested_product_id is None or line.requested_product_id == line.product_id:
        return None
    code, display = _REASONS.get(
        line.substitution_reason or "out_of_stock", _REASONS["out_of_stock"]
    )
    return fhir_dispense.Substitution(
        type_code="EC",
        type_display="equivalent composition",
        reason_code=code,
        reason_display=display,
    )


def dispense_bundle(session: Session, order: Order, *, all_lines: bool = False) -> dict:
    """Build the FHIR dispense Bundle of a completed order: its prescription lines, or every line
    with `all_lines`. 409 order_not_completed before the hand-over (nothing was dispensed yet)."""
    if order.status is not OrderStatus.COMPLETED or order.completed_at is None:
        raise Conflict(
            _("Nothing has been dispensed yet: the order is not completed."),
            code="order_not_completed",
            details={"status": order.status.value},
        )
    lines = [line for line in order.lines if all_lines or line.rx_only]
    lot_ids = [a.lot_id for line in lines for a in line.allocations]
    lots = {lot.id: lot for lot in session.scalars(select(Lot).where(Lot.id.in_(lot_ids)))}
    products = {
        p.id: p
        for p in session.scalars(
            select(Product).where(Product.id.in_([line.product_id for line in lines]))
        )
    }
    authorization = (
        prescriptions_service.dispense_authorization(session, order.id) if order.is_rx else None
    )
    requests = authorization["requests"] if authorization else {}
    patient = session.get(User, order.patient_id)
    store = session.get(Store, order.store_id)
    record = fhir_dispense.DispenseRecord(
        order_id=order.id,
        patient_id=order.patient_id,
        patient_name=patient.name if patient else None,
        store_id=order.store_id,
        store_name=store.name if store else "",
        completed_at=order.completed_at,
        prepared_at=order.ready_at,
        pharmacist=_pharmacist(session, order),
        refill=bool(authorization and authorization["refill"]),
        lines=[
            fhir_dispense.DispensedLine(
                line_id=line.id,
                product_id=line.product_id,
                name=products[line.product_id].name,
                gtin=products[line.product_id].gtin,
                strength=products[line.product_id].strength,
                dosage_form=products[line.product_id].dosage_form,
                rx_only=line.rx_only,
                lots=[
                    fhir_dispense.HandedLot(
                        lot_number=lots[a.lot_id].lot_number,
                        expiry_date=lots[a.lot_id].expiry_date,
                        quantity=a.quantity,
                    )
                    for a in sorted(line.allocations, key=lambda a: lots[a.lot_id].expiry_date)
                ],
                request=(
                    requests.get(line.product_id)
                    or requests.get(line.requested_product_id or line.product_id)
                    if line.rx_only
                    else None
                ),
                substitution=_substitution(line),
            )
            for line in lines
        ],
    )
    return fhir_dispense.build_bundle(record, generated_at=clock.now())
