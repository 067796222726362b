"""Build the FHIR R4 dispense record of a completed order (pure): a `collection` Bundle with one
MedicationDispense per lot an order line was handed over from, the Patient, the store as an
Organization and the pharmacist as a Practitioner.

Why one MedicationDispense per lot: FHIR R4 keeps the lot number and expiry on the Medication
(`Medication.batch`), not on the dispense, and a dispense names one medication. A line whose units
came from two lots is two dispenses of the same product, each with its own contained Medication,
its own batch and its own quantity; both point at the same MedicationRequest.

`substitution` is always stated: `wasSubstituted: false`, or, for a line filled with another
product, the substitution's type and reason (v3 codes), filled from `Substitution`.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

_NAMESPACE = uuid.UUID("2d6b0c1e-8a51-4c8e-9d0e-6a7f3b9e4c21")
SYSTEM_ORDER = "urn:o2o:order"
SYSTEM_ORDER_LINE = "urn:o2o:order-line"
SYSTEM_PATIENT = "urn:o2o:patient"
SYSTEM_STORE = "urn:o2o:store"
SYSTEM_STAFF = "urn:o2o:staff"
SYSTEM_GTIN = "https://www.gs1.org/gtin"
SYSTEM_PERFORMER_FUNCTION = (
    "http://terminology.hl7.org/CodeSystem/medicationdispense-performer-function"
)
SYSTEM_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SYSTEM_SUBSTITUTION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-substanceAdminSubstitution"
SYSTEM_SUBSTITUTION_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _urn(*parts: object) -> str:
    return uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)).urn


@dataclass(frozen=True)
class Substitution:
    """What a pharmacist's substitution records (v3 codes): type, e.g. "E" (equivalent) or "G"
    (generic); reason, e.g. "OS" (out of stock), "FP" (formulary policy), "RR" (regulatory)."""

    type_code: str
    type_display: str
    reason_code: str
    reason_display: str


@dataclass(frozen=True)
class HandedLot:
    lot_number: str
    expiry_date: date
    quantity: int


@dataclass(frozen=True)
class DispensedLine:
    line_id: int
    product_id: int
    name: str
    gtin: str | None
    strength: str
    dosage_form: str
    rx_only: bool
    lots: Sequence[HandedLot]
    # The MedicationRequest (of the prescription export) that authorized it: {"id", "identifier"}
    request: dict | None = None
    substitution: Substitution | None = None


@dataclass(frozen=True)
class DispenseRecord:
    order_id: uuid.UUID
    patient_id: int
    patient_name: str | None
    store_id: int
    store_name: str
    completed_at: datetime
    prepared_at: datetime | None
    pharmacist: (
        tuple[int, str] | None
    )  # (id, name) of the pharmacist who handed it over or checked it
    refill: bool
    lines: Sequence[DispensedLine] = field(default_factory=tuple)


def _substitution(s: Substitution | None) -> dict:
    if s is None:
        return {"wasSubstituted": False}
    return {
        "wasSubstituted": True,
        "type": {
            "coding": [
                {"system": SYSTEM_SUBSTITUTION_TYPE, "code": s.type_code, "display": s.type_display}
            ]
        },
        "reason": [
            {
                "coding": [
                    {
                        "system": SYSTEM_SUBSTITUTION_REASON,
                        "code": s.reason_code,
                        "display": s.reason_display,
                    }
                ]
            }
        ],
    }


def _medication(line: DispensedLine, lot: HandedLot) -> dict:
    label = " ".join(part for part in (line.name, line.strength, line.dosage_form) if part)
    code: dict = {"text": label}
    if line.gtin:
        code["coding"] = [{"system": SYSTEM_GTIN, "code": line.gtin, "display": line.name}]
    return {
        "resourceType": "Medication",
        "id": "medication",
        "code": code,
        "batch": {"lotNumber": lot.lot_number, "expirationDate": lot.expiry_date.isoformat()},
    }


def build_bundle(record: DispenseRecord, *, generated_at: datetime) -> dict:
    """Build the dispense Bundle of a completed order."""
    oid = str(record.order_id)
    patient_url = _urn(oid, "patient", record.patient_id)
    store_url = _urn(oid, "store", record.store_id)
    entries: list[dict] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "id": patient_url.removeprefix("urn:uuid:"),
                "identifier": [{"system": SYSTEM_PATIENT, "value": str(record.patient_id)}],
                **({"name": [{"text": record.patient_name}]} if record.patient_name else {}),
            },
        },
        {
            "fullUrl": store_url,
            "resource": {
                "resourceType": "Organization",
                "id": store_url.removeprefix("urn:uuid:"),
                "identifier": [{"system": SYSTEM_STORE, "value": str(record.store_id)}],
                "name": record.store_name,
            },
        },
    ]
    performers = []
    if record.pharmacist is not None:
        pharmacist_id, pharmacist_name = record.pharmacist
        pharmacist_url = _urn(oid, "practitioner", pharmacist_id)
        entries.append(
            {
                "fullUrl": pharmacist_url,
                "resource": {
                    "resourceType": "Practitioner",
                    "id": pharmacist_url.removeprefix("urn:uuid:"),
                    "identifier": [{"system": SYSTEM_STAFF, "value": str(pharmacist_id)}],
                    "name": [{"text": pharmacist_name}],
                },
            }
        )
        performers.append(
            {
                "function": {
                    "coding": [
                        {
                            "system": SYSTEM_PERFORMER_FUNCTION,
                            "code": "finalchecker",
                            "display": "Final Checker",
                        }
                    ]
                },
                "actor": {"reference": pharmacist_url, "display": pharmacist_name},
            }
        )
    performers.append({"actor": {"reference": store_url, "display": record.store_name}})

    for line in record.lines:
        for lot in line.lots:
            url = _urn(oid, "dispense", line.line_id, lot.lot_number)
            dispense: dict = {
                "resourceType": "MedicationDispense",
                "id": url.removeprefix("urn:uuid:"),
                "contained": [_medication(line, lot)],
                "identifier": [
                    {
                        "system": SYSTEM_ORDER_LINE,
                        "value": f"{oid}/{line.line_id}/{lot.lot_number}",
                    }
                ],
                "status": "completed",
                "medicationReference": {"reference": "#medication", "display": line.name},
                "subject": {"reference": patient_url},
                "performer": performers,
                "quantity": {"value": lot.quantity, "unit": "pack"},
                "whenHandedOver": record.completed_at.isoformat(timespec="seconds"),
                "substitution": _substitution(line.substitution),
            }
            if record.prepared_at is not None:
                dispense["whenPrepared"] = record.prepared_at.isoformat(timespec="seconds")
            if line.request is not None:
                dispense["type"] = {
                    "coding": [
                        {
                            "system": SYSTEM_ACT_CODE,
                            "code": "RF" if record.refill else "FF",
                            "display": "Refill" if record.refill else "First Fill",
                        }
                    ]
                }
                dispense["authorizingPrescription"] = [
                    {
                        "reference": f"MedicationRequest/{line.request['id']}",
                        "type": "MedicationRequest",
                        "identifier": line.request["identifier"],
                    }
                ]
            entries.append({"fullUrl": url, "resource": dispense})
    return {
        "resourceType": "Bundle",
        "id": _urn(oid, "dispense-bundle").removeprefix("urn:uuid:"),
        "identifier": {"system": SYSTEM_ORDER, "value": oid},
        "type": "collection",
        "timestamp": generated_at.isoformat(timespec="seconds"),
        "entry": entries,
    }
