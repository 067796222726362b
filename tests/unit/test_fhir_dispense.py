"""The dispense Bundle (pure): one MedicationDispense per lot, validated by fhir.resources (R4B,
the R4 line it ships); the substitution a later flow fills is stated either way."""

import uuid
from datetime import UTC, date, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationdispense import MedicationDispense

from o2o.order_flow import fhir_dispense as f

AT = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


def _record(substitution=None, pharmacist=(7, "Pat Lin")):
    return f.DispenseRecord(
        order_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        patient_id=3,
        patient_name="Mei Chen",
        store_id=5,
        store_name="Jing'an Pharmacy",
        completed_at=AT,
        prepared_at=AT,
        pharmacist=pharmacist,
        refill=False,
        lines=[
            f.DispensedLine(
                line_id=11,
                product_id=9,
                name="Amoxicillin",
                gtin="06901234567892",
                strength="500 mg",
                dosage_form="capsules",
                rx_only=True,
                lots=[
                    f.HandedLot("A1", date(2027, 1, 31), 2),
                    f.HandedLot("B2", date(2027, 6, 30), 1),
                ],
                request={
                    "id": "abc",
                    "identifier": {"system": "urn:o2o:prescription", "value": "p/9"},
                },
                substitution=substitution,
            )
        ],
    )


def _dispenses(bundle: dict) -> list[MedicationDispense]:
    return [
        MedicationDispense.model_validate(e["resource"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "MedicationDispense"
    ]


def test_one_dispense_per_lot_with_batch_prescription_and_no_substitution():
    bundle = f.build_bundle(_record(), generated_at=AT)
    Bundle.model_validate(bundle)
    dispenses = _dispenses(bundle)
    assert [(d.contained[0].batch.lotNumber, d.quantity.value) for d in dispenses] == [
        ("A1", 2),
        ("B2", 1),
    ]
    assert dispenses[0].contained[0].batch.expirationDate == date(2027, 1, 31)
    assert all(d.substitution.wasSubstituted is False for d in dispenses)
    assert dispenses[0].authorizingPrescription[0].reference == "MedicationRequest/abc"
    assert dispenses[0].performer[0].function.coding[0].code == "finalchecker"


def test_a_substitution_carries_its_type_and_reason():
    sub = f.Substitution("E", "equivalent", "OS", "out of stock")
    bundle = f.build_bundle(_record(substitution=sub), generated_at=AT)
    Bundle.model_validate(bundle)
    d = _dispenses(bundle)[0]
    assert d.substitution.wasSubstituted is True
    assert d.substitution.type.coding[0].code == "E"
    assert d.substitution.reason[0].coding[0].code == "OS"


def test_without_a_named_pharmacist_the_store_performs():
    bundle = f.build_bundle(_record(pharmacist=None), generated_at=AT)
    Bundle.model_validate(bundle)
    (performer,) = _dispenses(bundle)[0].performer
    assert performer.actor.display == "Jing'an Pharmacy"
