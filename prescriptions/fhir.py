"""Export a signed prescription as FHIR R4: a `collection` Bundle of one MedicationRequest per
prescribed item, the Patient and Practitioner they reference, the exact signed bytes as a Binary,
and a Provenance that carries the doctor's signature over them.

Why a Bundle and not a contained Provenance: a Provenance points at its targets, while contained
resources must be referenced from their container and cannot be the container's own provenance;
FHIR also asks for one medication per MedicationRequest, so several items need several resources.
A Bundle holds them all with `urn:uuid:` references that resolve inside it.

Pure: built from the signed document (what the doctor signed, not copies of it) and plain values.
"""

import base64
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

# Stable namespace for the deterministic urn:uuid ids of the resources of one export.
_NAMESPACE = uuid.UUID("6f1f8a57-35d0-4f3e-9a4f-0d1c6b2a7e11")
SYSTEM_PRESCRIPTION = "urn:o2o:prescription"
SYSTEM_PATIENT = "urn:o2o:patient"
SYSTEM_DOCTOR = "urn:o2o:doctor"
EXT_SIGNATURE_ALGORITHM = "https://o2o.example/fhir/StructureDefinition/signature-algorithm"
EXT_SIGNATURE_KEY = "https://o2o.example/fhir/StructureDefinition/signature-key-id"

# Prescription status -> MedicationRequest.status (R4 value set medicationrequest-status).
STATUS = {
    "issued": "active",
    "approved": "active",
    "dispensed": "completed",
    "expired": "stopped",
    "rejected": "stopped",
    "cancelled": "cancelled",
}


def _urn(*parts: Any) -> str:
    return uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)).urn


def medication_request_id(prescription_id: uuid.UUID | str, product_id: int) -> str:
    """Return the id of the MedicationRequest this export gives a prescribed product (stable, so
    a dispense record can reference it as `MedicationRequest/<id>`)."""
    return _urn(str(prescription_id), "item", product_id).removeprefix("urn:uuid:")


def build_bundle(
    *,
    prescription_id: uuid.UUID,
    status: str,
    document: Mapping[str, Any],
    signed_payload: bytes,
    signature: bytes,
    products: Mapping[int, Mapping[str, Any]],
    generated_at: datetime,
) -> dict:
    """Build the FHIR R4 Bundle for a signed prescription.

    `products` maps product id -> {"gtin", "name", "strength", "dosage_form"}.
    """
    pid = str(prescription_id)
    patient = document["patient"]
    doctor = document["doctor"]
    validity = document["validity"]
    patient_url = _urn(pid, "patient", patient["id"])
    doctor_url = _urn(pid, "practitioner", doctor["id"])
    binary_url = _urn(pid, "signed-payload")
    provenance_url = _urn(pid, "provenance")
    group = {"system": SYSTEM_PRESCRIPTION, "value": pid}

    entries: list[dict] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "id": patient_url.removeprefix("urn:uuid:"),
                "identifier": [{"system": SYSTEM_PATIENT, "value": str(patient["id"])}],
                "name": [{"use": "official", "text": patient["legal_name"]}],
            },
        },
        {
            "fullUrl": doctor_url,
            "resource": {
                "resourceType": "Practitioner",
                "id": doctor_url.removeprefix("urn:uuid:"),
                "identifier": [{"system": SYSTEM_DOCTOR, "value": str(doctor["id"])}],
                "name": [{"text": doctor["name"]}],
            },
        },
    ]
    request_urls = []
    for item in document["items"]:
        product = products.get(item["product_id"], {})
        url = _urn(pid, "item", item["product_id"])
        request_urls.append(url)
        coding = []
        if product.get("gtin"):
            coding.append(
                {
                    "system": "https://www.gs1.org/gtin",
                    "code": product["gtin"],
                    "display": item["product_name"],
                }
            )
        label = " ".join(
            part
            for part in (item["product_name"], product.get("strength"), product.get("dosage_form"))
            if part
        )
        entries.append(
            {
                "fullUrl": url,
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": url.removeprefix("urn:uuid:"),
                    "identifier": [
                        {"system": SYSTEM_PRESCRIPTION, "value": f"{pid}/{item['product_id']}"}
                    ],
                    "groupIdentifier": group,
                    "status": STATUS.get(status, "unknown"),
                    "intent": "order",
                    "medicationCodeableConcept": {"coding": coding, "text": label}
                    if coding
                    else {"text": label},
                    "subject": {"reference": patient_url, "display": patient["legal_name"]},
                    "authoredOn": document["issued_at"],
                    "requester": {"reference": doctor_url, "display": doctor["name"]},
                    "dosageInstruction": [
                        {
                            "sequence": 1,
                            "text": (
                                f"{item['dose']}, {item['frequency']}, "
                                f"for {item['duration_days']} days"
                            ),
                        }
                    ],
                    "dispenseRequest": {
                        "validityPeriod": {
                            "start": validity["issued_at"],
                            "end": validity["expires_at"],
                        },
                        "numberOfRepeatsAllowed": document["refills"],
                        "quantity": {"value": item["quantity"], "unit": "pack"},
                        "expectedSupplyDuration": {
                            "value": item["duration_days"],
                            "unit": "days",
                            "system": "http://unitsofmeasure.org",
                            "code": "d",
                        },
                    },
                    # Signed by the doctor; documents signed before it existed say nothing,
                    # which means no substitution.
                    "substitution": {
                        "allowedBoolean": bool(item.get("substitution_allowed", False))
                    },
                },
            }
        )
    entries.append(
        {
            "fullUrl": binary_url,
            "resource": {
                "resourceType": "Binary",
                "id": binary_url.removeprefix("urn:uuid:"),
                "contentType": "application/json",
                "data": base64.b64encode(signed_payload).decode("ascii"),
            },
        }
    )
    entries.append(
        {
            "fullUrl": provenance_url,
            "resource": {
                "resourceType": "Provenance",
                "id": provenance_url.removeprefix("urn:uuid:"),
                "target": [{"reference": url} for url in request_urls],
                "recorded": document["issued_at"],
                "agent": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "provenance-participant-type",
                                    "code": "author",
                                }
                            ]
                        },
                        "who": {"reference": doctor_url, "display": doctor["name"]},
                    }
                ],
                # The signed bytes: verify `signature` over Binary.data (decoded) with the key.
                "entity": [{"role": "source", "what": {"reference": binary_url}}],
                "signature": [
                    {
                        "extension": [
                            {"url": EXT_SIGNATURE_ALGORITHM, "valueCode": "Ed25519"},
                            {"url": EXT_SIGNATURE_KEY, "valueString": str(doctor["key_id"])},
                        ],
                        "type": [
                            {
                                "system": "urn:iso-astm:E1762-95:2013",
                                "code": "1.2.840.10065.1.12.1.1",
                                "display": "Author's Signature",
                            }
                        ],
                        "when": document["issued_at"],
                        "who": {"reference": doctor_url, "display": doctor["name"]},
                        "targetFormat": "application/json",
                        "data": base64.b64encode(signature).decode("ascii"),
                    }
                ],
            },
        }
    )
    return {
        "resourceType": "Bundle",
        "id": pid,
        "identifier": group,
        "type": "collection",
        "timestamp": generated_at.isoformat(timespec="seconds"),
        "entry": entries,
    }
