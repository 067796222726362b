"""The FHIR export is valid R4 (checked with fhir.resources' R4B models, identical for these
resources) for several items and every exportable status, without a database."""

import uuid
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle

from prescriptions import fhir, signing

DOCUMENT = {
    "type": "o2o.prescription",
    "version": 1,
    "prescription_id": "",
    "items": [
        {
            "product_id": 1,
            "product_name": "Amoxicillin",
            "quantity": 2,
            "dose": "500 mg",
            "frequency": "three times a day",
            "duration_days": 7,
        },
        {
            "product_id": 2,
            "product_name": "Ibuprofen",
            "quantity": 1,
            "dose": "200 mg",
            "frequency": "when needed",
            "duration_days": 3,
        },
    ],
    "refills": 0,
    "validity": {"issued_at": "2026-11-23T10:00:00Z", "expires_at": "2026-11-24T10:00:00Z"},
    "patient": {"id": 7, "legal_name": "Li Wei", "id_number_masked": "1101**********1234"},
    "doctor": {"id": 3, "name": "Dr Zhang", "key_id": 5},
    "issued_at": "2026-11-23T10:00:00Z",
}


@pytest.mark.parametrize("status", sorted(fhir.STATUS))
def test_bundle_is_valid_for_every_status(status):
    pid = uuid.uuid4()
    payload = signing.canonical_bytes({**DOCUMENT, "prescription_id": str(pid)})
    bundle = fhir.build_bundle(
        prescription_id=pid,
        status=status,
        document={**DOCUMENT, "prescription_id": str(pid)},
        signed_payload=payload,
        signature=b"\x01" * 64,
        products={
            1: {
                "gtin": "06912345678901",
                "name": "Amoxicillin",
                "strength": "500 mg",
                "dosage_form": "capsule",
            }
        },
        generated_at=datetime(2026, 11, 23, 10, 5, tzinfo=UTC),
    )
    parsed = Bundle.model_validate(bundle)
    requests = [
        e.resource for e in parsed.entry if e.resource.get_resource_type() == "MedicationRequest"
    ]
    assert len(requests) == 2
    assert {r.status for r in requests} == {fhir.STATUS[status]}
    # A product without a GTIN still has its name as text.
    assert requests[1].medicationCodeableConcept.text == "Ibuprofen"
    provenance = next(
        e.resource for e in parsed.entry if e.resource.get_resource_type() == "Provenance"
    )
    assert len(provenance.target) == 2
    # Deterministic ids: the same prescription exports the same resources.
    again = fhir.build_bundle(
        prescription_id=pid,
        status=status,
        document={**DOCUMENT, "prescription_id": str(pid)},
        signed_payload=payload,
        signature=b"\x01" * 64,
        products={},
        generated_at=datetime(2026, 11, 23, 10, 5, tzinfo=UTC),
    )
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in bundle["entry"]]
