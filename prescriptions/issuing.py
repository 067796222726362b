"""The doctor's decision: claim a waiting request, sign the canonical payload prepared for it
and issue the prescription, or decline it (the order is cancelled).

The signed document is the prescription: its times are whole UTC seconds in one text format,
and what a later step decides from is read back from it, not from the columns copied from it.
"""

import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.users.models import User
from prescriptions import doctor_keys, signing, trail, workflow
from prescriptions.models import DoctorKey, DoctorKeyStatus, Prescription
from prescriptions.schemas import SigningPayloadIn
from prescriptions.workflow import PrescriptionStatus
from stores.models import Product

S = PrescriptionStatus
PAYLOAD_TYPE = "o2o.prescription"
PAYLOAD_VERSION = 1


def signed_time(at: datetime) -> str:
    """Write a time the way the signed document holds it (whole seconds, UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_signed_time(value: str) -> datetime:
    """Read a time of the signed document."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def signed_document(p: Prescription) -> dict:
    """The prescription as the doctor signed it (the stored columns are a copy of this)."""
    return json.loads(p.signed_payload)


def _check_doctor_owns(p: Prescription, doctor: User) -> None:
    """Refuse a doctor's action on a request someone else claimed (409), or nobody claimed."""
    if p.doctor_id is None:
        if p.status is S.REQUESTED:
            raise Conflict(
                _("Claim the request before acting on it."),
                code="not_claimed",
                details={"status": p.status.value},
            )
        raise workflow.IllegalPrescriptionTransition(
            _("This request is {value}.").format(value=p.status.value),
            details={"status": p.status.value},
        )
    if p.doctor_id != doctor.id:
        raise Conflict(
            _("Another doctor has claimed this request."), code="claimed_by_another_doctor"
        )


def claim(session: Session, doctor: User, prescription_id: uuid.UUID) -> Prescription:
    """Take a waiting request; of doctors claiming at once exactly one wins, the others get 409."""
    at = clock.now()
    # The doctor's own claims are serialised on their user row, so two claims at once cannot
    # both pass the cap.
    session.execute(select(User.id).where(User.id == doctor.id).with_for_update())
    held = session.scalar(
        select(func.count())
        .select_from(Prescription)
        .where(
            Prescription.status == S.CLAIMED,
            Prescription.doctor_id == doctor.id,
            Prescription.id != prescription_id,
        )
    )
    cap = get_settings().prescription_max_open_claims
    if held >= cap:
        raise Conflict(
            _("You already hold the most requests a doctor may claim at once; finish one first."),
            code="too_many_open_claims",
            details={"max_open_claims": cap},
        )
    # One conditional UPDATE: a second claimer blocks on the row lock, then finds the status
    # changed and updates nothing.
    won = session.execute(
        update(Prescription)
        .where(Prescription.id == prescription_id, Prescription.status == S.REQUESTED)
        .values(status=S.CLAIMED, doctor_id=doctor.id, claimed_at=at)
        .returning(Prescription.id)
        .execution_options(synchronize_session=False)
    ).first()
    p = session.get(Prescription, prescription_id, populate_existing=True)
    if p is None:
        raise trail.not_found()
    if won is None:
        if p.status is S.CLAIMED and p.doctor_id == doctor.id:
            return p  # a repeated claim by the same doctor
        if p.doctor_id is not None and p.doctor_id != doctor.id:
            raise Conflict(
                _("Another doctor has claimed this request."), code="claimed_by_another_doctor"
            )
        raise workflow.IllegalPrescriptionTransition(
            _("This request is {value} and cannot be claimed.").format(value=p.status.value),
            details={"status": p.status.value},
        )
    trail.audit(
        session, p, "claimed", actor=doctor, from_status=S.REQUESTED, to_status=S.CLAIMED, at=at
    )
    session.flush()
    return p


def _payload_document(
    session: Session,
    p: Prescription,
    doctor: User,
    key: DoctorKey,
    body: SigningPayloadIn,
    issued_at: datetime,
) -> dict:
    settings = get_settings()
    valid_hours = body.valid_hours or settings.prescription_default_valid_hours
    if valid_hours > settings.prescription_max_valid_hours:
        raise InvalidInput(
            _("A prescription is valid for at most {prescription_max_valid_hours} hours.").format(
                prescription_max_valid_hours=settings.prescription_max_valid_hours
            ),
            code="validity_too_long",
        )
    ids = sorted(item.product_id for item in body.items)
    products = {
        prod.id: prod for prod in session.scalars(select(Product).where(Product.id.in_(ids)))
    }
    unknown = [pid for pid in ids if pid not in products]
    if unknown:
        raise InvalidInput(
            _("Unknown products."), code="unknown_product", details={"product_ids": unknown}
        )
    controlled = [pid for pid in ids if products[pid].controlled]
    if controlled:
        raise InvalidInput(
            _("Controlled medicines are never sold online."),
            code="controlled_product",
            details={"product_ids": controlled},
        )
    items = [
        {
            "product_id": item.product_id,
            "product_name": products[item.product_id].name,
            "quantity": item.quantity,
            "dose": item.dose,
            "frequency": item.frequency,
            "duration_days": item.duration_days,
            "substitution_allowed": item.substitution_allowed,
        }
        for item in sorted(body.items, key=lambda i: i.product_id)
    ]
    expires_at = issued_at + timedelta(hours=valid_hours)
    return {
        "type": PAYLOAD_TYPE,
        "version": PAYLOAD_VERSION,
        "prescription_id": str(p.id),
        "items": items,
        "refills": body.refills,
        "validity": {"issued_at": signed_time(issued_at), "expires_at": signed_time(expires_at)},
        "patient": {
            "id": p.patient_id,
            "legal_name": p.legal_name,
            "id_number_masked": p.id_number_masked,
        },
        "doctor": {"id": doctor.id, "name": doctor.name, "key_id": key.id},
        "issued_at": signed_time(issued_at),
    }


def prepare_signing_payload(
    session: Session, doctor: User, prescription_id: uuid.UUID, body: SigningPayloadIn
) -> tuple[bytes, DoctorKey, datetime]:
    """Build and keep the canonical payload the doctor is to sign; return it with the key and
    the time by which it must be signed."""
    p = trail.lock(session, prescription_id)
    _check_doctor_owns(p, doctor)
    if p.status is not S.CLAIMED:
        raise workflow.IllegalPrescriptionTransition(
            _("This prescription is {value}; nothing is left to sign.").format(
                value=p.status.value
            ),
            details={"status": p.status.value},
        )
    key = doctor_keys.active_key(session, doctor.id)
    if key is None:
        raise Conflict(
            _("You have no approved signing key; register one and have it approved."),
            code="no_active_key",
        )
    # Whole seconds: the signed times are exactly the stored ones.
    issued_at = clock.now().replace(microsecond=0)
    document = _payload_document(session, p, doctor, key, body, issued_at)
    payload = signing.canonical_bytes(document)
    p.pending_payload = payload
    p.pending_payload_at = issued_at
    p.pending_key_id = key.id
    session.flush()
    window = timedelta(minutes=get_settings().prescription_signing_window_minutes)
    return payload, key, issued_at + window


def _b64(value: str, code: str, what: str) -> bytes:
    try:
        return signing.b64decode(value, what=what)
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code=code) from None


def issue(
    session: Session, doctor: User, prescription_id: uuid.UUID, payload_b64: str, signature_b64: str
) -> Prescription:
    """Accept the doctor's signature over the prepared payload and issue the prescription."""
    p = trail.lock(session, prescription_id)
    _check_doctor_owns(p, doctor)
    if p.status is not S.CLAIMED:
        raise workflow.IllegalPrescriptionTransition(
            _("This prescription is {value} and cannot be issued.").format(value=p.status.value),
            details={"status": p.status.value},
        )
    if p.pending_payload is None or p.pending_key_id is None:
        raise Conflict(_("Ask for the signing payload first."), code="no_pending_payload")
    payload = _b64(payload_b64, "invalid_payload", "payload")
    signature = _b64(signature_b64, "invalid_signature", "signature")
    # Constant time: the comparison must not reveal how much of a forged payload matched.
    if not hmac.compare_digest(payload, p.pending_payload):
        raise InvalidInput(
            _("The payload is not the one prepared for signing: it was changed."),
            code="payload_mismatch",
        )
    at = clock.now()
    window = timedelta(minutes=get_settings().prescription_signing_window_minutes)
    if at > p.pending_payload_at + window:
        raise Conflict(
            _("The signing payload is too old; ask for a new one."), code="payload_stale"
        )
    key = doctor_keys.key_for_share(session, p.pending_key_id)
    if key.status is DoctorKeyStatus.REVOKED:
        raise InvalidInput(_("The signing key has been revoked."), code="key_revoked")
    if key.status is not DoctorKeyStatus.ACTIVE:
        raise InvalidInput(
            _("The signing key is no longer your active key; ask for a new payload."),
            code="key_not_active",
        )
    if not signing.verify(key.public_key, payload, signature):
        raise InvalidInput(
            _("The signature does not verify against your active key."), code="invalid_signature"
        )
    document = json.loads(payload)
    p.items = document["items"]
    p.refills = document["refills"]
    p.issued_at = parse_signed_time(document["validity"]["issued_at"])
    p.expires_at = parse_signed_time(document["validity"]["expires_at"])
    p.signed_payload = payload
    p.signature = signature
    p.doctor_key_id = key.id
    trail.clear_pending(p)
    trail.move(
        session,
        p,
        S.ISSUED,
        "issued",
        actor=doctor,
        at=at,
        details={"key_id": key.id, "expires_at": p.expires_at.isoformat()},
    )
    trail.emit(
        session,
        "prescription.issued",
        p,
        trail.store_id_of(session, p),
        doctor_id=doctor.id,
        expires_at=p.expires_at.isoformat(),
    )
    session.flush()
    return p


def decline(
    session: Session, doctor: User, prescription_id: uuid.UUID, reason: str
) -> Prescription:
    """Decline a claimed request with a reason; the order is cancelled and its stock freed."""
    order, p = trail.lock_order_then_prescription(session, prescription_id)
    _check_doctor_owns(p, doctor)
    at = clock.now()
    trail.move(session, p, S.DECLINED, "declined", actor=doctor, at=at, reason=reason)
    p.decline_reason = reason
    trail.clear_pending(p)
    trail.emit(session, "prescription.declined", p, order.store_id, reason=reason)
    session.flush()
    lifecycle.cancel(
        session, order, reason=f"The doctor declined the prescription: {reason}", actor_id=doctor.id
    )
    return p
