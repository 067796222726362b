"""Reading a prescription's record: its audit trail, and its export as a FHIR R4 Bundle."""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.users.models import User
from prescriptions import fhir, issuing, trail
from prescriptions.models import Prescription, PrescriptionAudit
from stores.models import Product


def audit_entries(
    session: Session, user: User, prescription_id: uuid.UUID, *, limit: int, after_id: int | None
) -> list[PrescriptionAudit]:
    """The audit trail of a prescription the user may see, oldest first."""
    p = trail.get_visible(session, user, prescription_id)
    query = (
        select(PrescriptionAudit)
        .where(PrescriptionAudit.prescription_id == p.id)
        .order_by(PrescriptionAudit.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(PrescriptionAudit.id > after_id)
    return list(session.scalars(query))


def fhir_export(session: Session, user: User, prescription_id: uuid.UUID) -> dict:
    """The prescription as a FHIR R4 Bundle (MedicationRequests + Provenance with the signature)."""
    p = trail.get_visible(session, user, prescription_id)
    if p.signed_payload is None or p.signature is None:
        raise Conflict(
            _("Only a signed prescription can be exported."),
            code="not_issued",
            details={"status": p.status.value},
        )
    if p.refill_of is not None:
        # A refill fills the same signed prescription again: export that prescription.
        p = session.get(Prescription, p.refill_of)
    document = issuing.signed_document(p)
    ids = [item["product_id"] for item in document["items"]]
    products = {
        row.id: {
            "gtin": row.gtin,
            "name": row.name,
            "strength": row.strength,
            "dosage_form": row.dosage_form,
        }
        for row in session.scalars(select(Product).where(Product.id.in_(ids)))
    }
    return fhir.build_bundle(
        prescription_id=p.id,
        status=p.status.value,
        document=document,
        signed_payload=p.signed_payload,
        signature=p.signature,
        products=products,
        generated_at=clock.now(),
    )
