"""`GET /prescriptions/{id}/fhir`: a FHIR R4 Bundle that a FHIR model library accepts, whose
Provenance signature verifies over the signed bytes it carries.

fhir.resources ships R4B (4.3) as its R4 line; MedicationRequest, Provenance, Patient,
Practitioner, Binary and Bundle are unchanged between R4 and R4B, so a resource valid there is
valid R4.
"""

import base64
import json

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.provenance import Provenance

from prescriptions import signing
from tests.factories import auth
from tests.prescriptions.helpers import API, claim_and_issue, items_for, request_rx


def test_fhir_bundle_validates_and_carries_a_verifiable_signature(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    claim_and_issue(
        client, world.doctor, pid, items_for((world.rx, 2), duration_days=10), refills=1
    )

    r = client.get(f"{API}/prescriptions/{pid}/fhir", headers=auth(world.pharmacist))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "collection"
    resources = {e.resource.get_resource_type(): e.resource for e in bundle.entry}
    assert set(resources) == {
        "Patient",
        "Practitioner",
        "MedicationRequest",
        "Binary",
        "Provenance",
    }

    mr = MedicationRequest.model_validate(resources["MedicationRequest"].model_dump())
    assert mr.status == "active" and mr.intent == "order"
    assert mr.groupIdentifier.value == pid
    assert mr.medicationCodeableConcept.coding[0].code == world.rx.gtin
    assert mr.dispenseRequest.numberOfRepeatsAllowed == 1
    assert mr.dispenseRequest.quantity.value == 2
    assert mr.dispenseRequest.expectedSupplyDuration.value == 10
    assert mr.subject.reference == bundle.entry[0].fullUrl

    prov = Provenance.model_validate(resources["Provenance"].model_dump())
    urls = {e.resource.get_resource_type(): e.fullUrl for e in bundle.entry}
    assert [t.reference for t in prov.target] == [urls["MedicationRequest"]]
    assert prov.entity[0].what.reference == urls["Binary"]
    signed = base64.b64decode(r.json()["entry"][3]["resource"]["data"])
    signature = base64.b64decode(r.json()["entry"][4]["resource"]["signature"][0]["data"])
    public_key = world.doctor.private_key.public_key().public_bytes_raw()
    assert signing.verify(public_key, signed, signature)
    assert json.loads(signed)["prescription_id"] == pid


def test_fhir_before_issue_is_refused(client, db, world):
    order = world.order(db)
    pid = request_rx(client, world.patient, order)["id"]
    r = client.get(f"{API}/prescriptions/{pid}/fhir", headers=auth(world.patient))
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_issued"
