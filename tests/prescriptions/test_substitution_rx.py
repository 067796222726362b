"""A prescription item is substituted only where the doctor's signed prescription allows it
(`substitution_allowed` on its item, exported as MedicationRequest.substitution.allowedBoolean),
at checkout (checked at the pharmacist's review) and at the counter; the dispense record says
what was substituted, why, and under which request (validated with fhir.resources)."""

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest

from tests.factories import auth, make_lot, make_product
from tests.orders.helpers import stock
from tests.prescriptions.helpers import (
    API,
    claim_and_issue,
    items_for,
    make_rx_order,
    request_rx,
)


def _equivalent(db, world):
    brand = make_product(
        db,
        rx_only=True,
        name="Rx brand",
        generic_name=world.rx.generic_name,
        strength=world.rx.strength,
        dosage_form=world.rx.dosage_form,
        pack_size=world.rx.pack_size,
    )
    return brand, make_lot(db, world.store, brand, on_hand=10, days=500, lot_number="BRAND-1")


def _review(client, world, order, *, allowed: bool, product=None):
    pid = request_rx(client, world.patient, order)["id"]
    items = items_for((product or world.rx, 2), duration_days=10)
    items[0]["substitution_allowed"] = allowed
    claim_and_issue(client, world.doctor, pid, items)
    r = client.post(
        f"{API}/prescriptions/{pid}/review",
        json={"decision": "approve"},
        headers=auth(world.pharmacist),
    )
    return pid, r


def _substitute(client, world, order, to):
    return client.post(
        f"{API}/orders/{order.id}/substitutions",
        json={"product_id": world.rx.id, "to_product_id": to.id, "reason": "out_of_stock"},
        headers=auth(world.pharmacist),
    )


def _consenting_order(db, world):
    order = make_rx_order(db, world.patient, world.store, [(world.rx, 2, world.rx_lot)])
    order.lines[0].substitution = "allowed"  # the patient's consent up front
    db.flush()
    return order


def test_the_counter_substitutes_where_the_prescription_allows_and_the_dispense_says_so(
    client, db, world
):
    brand, brand_lot = _equivalent(db, world)
    order = _consenting_order(db, world)
    pid, r = _review(client, world, order, allowed=True)
    assert r.status_code == 200, r.text
    r = _substitute(client, world, order, brand)
    assert r.status_code == 201, r.text
    assert r.json()["substitution"]["status"] == "accepted"
    assert stock(db, world.rx_lot) == (20, 0) and stock(db, brand_lot) == (10, 2)

    # The prescription's export says substitution was allowed.
    export = client.get(f"{API}/prescriptions/{pid}/fhir", headers=auth(world.patient)).json()
    request = next(
        e["resource"]
        for e in export["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )
    assert MedicationRequest.model_validate(request).substitution.allowedBoolean is True

    order.pickup_code = "123456"
    db.flush()
    for step, body in (("prepare", None), ("ready", None), ("handover", {"pickup_code": "123456"})):
        r = client.post(
            f"{API}/orders/{order.id}/{step}", json=body, headers=auth(world.pharmacist)
        )
        assert r.status_code == 200, r.text
    r = client.get(f"{API}/orders/{order.id}/fhir/dispense", headers=auth(world.patient))
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    (dispense,) = [
        MedicationDispense.model_validate(e["resource"])
        for e in r.json()["entry"]
        if e["resource"]["resourceType"] == "MedicationDispense"
    ]
    assert dispense.contained[0].batch.lotNumber == "BRAND-1"
    assert dispense.substitution.wasSubstituted is True
    assert dispense.substitution.type.coding[0].code == "EC"
    assert dispense.substitution.reason[0].coding[0].code == "OS"
    (authorizing,) = dispense.authorizingPrescription
    assert authorizing.reference == f"MedicationRequest/{request['id']}"


def test_the_counter_refuses_where_the_prescription_does_not_allow(client, db, world):
    brand, brand_lot = _equivalent(db, world)
    order = _consenting_order(db, world)
    _, r = _review(client, world, order, allowed=False)
    assert r.status_code == 200, r.text
    r = _substitute(client, world, order, brand)
    assert r.status_code == 409 and r.json()["error"]["code"] == "substitution_not_allowed"
    assert stock(db, world.rx_lot) == (20, 2) and stock(db, brand_lot) == (10, 0)


def _order_filled_with_equivalent(db, world):
    """An order as checkout leaves it when the patient allowed an equivalent for the item."""
    brand, brand_lot = _equivalent(db, world)
    order = make_rx_order(db, world.patient, world.store, [(brand, 2, brand_lot)])
    order.lines[0].requested_product_id = world.rx.id
    order.lines[0].substitution = "allowed"
    db.flush()
    return order


def test_review_refuses_an_equivalent_the_prescription_does_not_allow(client, db, world):
    order = _order_filled_with_equivalent(db, world)
    _, r = _review(client, world, order, allowed=False)
    assert r.status_code == 409 and r.json()["error"]["code"] == "substitution_not_allowed"


def test_review_approves_an_equivalent_the_prescription_allows(client, db, world):
    order = _order_filled_with_equivalent(db, world)
    _, r = _review(client, world, order, allowed=True)
    assert r.status_code == 200, r.text
