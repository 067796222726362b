"""Prescriptions: the patient's request, the doctor's claim and signed decision, the pharmacist's
review, the audit trail, and the entry points other domains call.

Every function takes the caller's session and only flushes. Locks are taken in one order across
the domain: the order row, then the prescription row, then lots by id, so two decisions on the
same order never deadlock.
"""

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o import clock, outbox
from o2o.config import get_settings
from o2o.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from o2o.orders import lifecycle
from o2o.orders.models import LotAllocation, Order, OrderLine, OrderStatus
from o2o.users.models import Role, User
from prescriptions import fhir, signing, workflow
from prescriptions.models import (
    DoctorKey,
    DoctorKeyStatus,
    Prescription,
    PrescriptionAttachment,
    PrescriptionAudit,
)
from prescriptions.schemas import PrescriptionRequestIn, ReviewIn, SigningPayloadIn
from prescriptions.workflow import PrescriptionStatus
from stores.models import Lot, Product, Store

S = PrescriptionStatus
PAYLOAD_TYPE = "o2o.prescription"
PAYLOAD_VERSION = 1


def now_utc() -> datetime:
    return clock.now()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class AttachmentTooLarge(DomainError):
    status_code = 413
    code = "attachment_too_large"


@dataclass(frozen=True)
class Attachment:
    """An uploaded file as received. Its type is decided from the bytes; the client's file name
    and declared type are only checked not to contradict them."""

    data: bytes
    filename: str | None = None
    declared_type: str | None = None


# --- identity ----------------------------------------------------------------------------------


def id_number_hmac(number: str) -> str:
    """Keyed hash of a normalised identity number (same document, same hash; not reversible
    without the secret key)."""
    key = get_settings().secret_key.get_secret_value().encode()
    message = b"o2o:id-number:" + workflow.normalise_id_number(number).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# --- audit -------------------------------------------------------------------------------------


def _audit(
    session: Session,
    p: Prescription,
    action: str,
    *,
    actor: User | None,
    from_status: PrescriptionStatus | None,
    to_status: PrescriptionStatus,
    at: datetime,
    reason: str | None = None,
    details: dict | None = None,
) -> None:
    session.add(
        PrescriptionAudit(
            prescription_id=p.id,
            action=action,
            actor_id=actor.id if actor else None,
            actor_role=actor.role.value if actor else "system",
            at=at,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            details=details,
        )
    )


def _move(
    session: Session,
    p: Prescription,
    to: PrescriptionStatus,
    action: str,
    *,
    actor: User | None,
    at: datetime,
    reason: str | None = None,
    details: dict | None = None,
) -> None:
    """Apply a checked state change and append its audit entry."""
    workflow.check(p.status, to)
    previous = p.status
    p.status = to
    _audit(
        session,
        p,
        action,
        actor=actor,
        from_status=previous,
        to_status=to,
        at=at,
        reason=reason,
        details=details,
    )


def _event(session: Session, event_type: str, p: Prescription, store_id: int, **extra) -> None:
    payload = {
        "prescription_id": str(p.id),
        "order_id": str(p.order_id),
        "store_id": store_id,
        "patient_id": p.patient_id,
        "status": p.status.value,
        **extra,
    }
    outbox.emit(session, event_type, "prescription", p.id, payload)


# --- loading and visibility --------------------------------------------------------------------


def _not_found() -> NotFound:
    return NotFound("No such prescription.", code="prescription_not_found")


def _store_id(session: Session, p: Prescription) -> int:
    return session.scalar(select(Order.store_id).where(Order.id == p.order_id))


def _store_ids(session: Session, rows: list[Prescription]) -> dict[uuid.UUID, int]:
    """The store of each row's order, keyed by order id, in one query."""
    if not rows:
        return {}
    return dict(
        session.execute(
            select(Order.id, Order.store_id).where(Order.id.in_({p.order_id for p in rows}))
        ).all()
    )


def can_view(user: User, p: Prescription, store_id: int) -> bool:
    """Say whether user may see the prescription: owner, its doctor, the store's pharmacist,
    an admin."""
    if user.role is Role.ADMIN:
        return True
    if user.role is Role.PATIENT:
        return p.patient_id == user.id
    if user.role is Role.DOCTOR:
        return p.doctor_id == user.id
    if user.role is Role.PHARMACIST:
        return store_id in user.store_ids
    return False


def get_visible(session: Session, user: User, prescription_id: uuid.UUID) -> Prescription:
    """Load a prescription the user may see, or 404 (whether it exists or not)."""
    p = session.get(Prescription, prescription_id)
    if p is None or not can_view(user, p, _store_id(session, p)):
        raise _not_found()
    return p


def _lock(session: Session, prescription_id: uuid.UUID) -> Prescription:
    p = session.scalar(
        select(Prescription)
        .where(Prescription.id == prescription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if p is None:
        raise _not_found()
    return p


def _check_doctor_owns(p: Prescription, doctor: User) -> None:
    """Refuse a doctor's action on a request someone else claimed (409), or nobody claimed."""
    if p.doctor_id is None:
        if p.status is S.REQUESTED:
            raise Conflict(
                "Claim the request before acting on it.",
                code="not_claimed",
                details={"status": p.status.value},
            )
        raise workflow.IllegalPrescriptionTransition(
            f"This request is {p.status.value}.", details={"status": p.status.value}
        )
    if p.doctor_id != doctor.id:
        raise Conflict("Another doctor has claimed this request.", code="claimed_by_another_doctor")


def _lock_order_then_prescription(
    session: Session, prescription_id: uuid.UUID
) -> tuple[Order, Prescription]:
    p = session.get(Prescription, prescription_id)
    if p is None:
        raise _not_found()
    order = lifecycle.lock_order(session, p.order_id)
    return order, _lock(session, prescription_id)


# --- patient: the request ----------------------------------------------------------------------


def _lock_order_awaiting_prescription(
    session: Session, patient: User, order_id: uuid.UUID
) -> Order:
    """Lock the patient's order that waits for a prescription and has no open request yet."""
    owner = session.scalar(select(Order.patient_id).where(Order.id == order_id))
    if owner is None or owner != patient.id:
        raise NotFound("No such order.", code="order_not_found")
    order = lifecycle.lock_order(session, order_id)
    if order.status is not OrderStatus.AWAITING_PRESCRIPTION:
        raise Conflict(
            "This order is not waiting for a prescription.",
            code="order_not_awaiting_prescription",
            details={"order_status": order.status.value},
        )
    if not order.is_rx:
        raise Conflict("This order needs no prescription.", code="prescription_not_needed")
    open_id = session.scalar(
        select(Prescription.id).where(
            Prescription.order_id == order.id,
            Prescription.status.in_(workflow.OPEN_STATES),
        )
    )
    if open_id is not None:
        raise Conflict(
            "This order already has an open prescription request.",
            code="prescription_already_requested",
            details={"prescription_id": str(open_id)},
        )
    return order


def _add_open_request(session: Session, p: Prescription) -> None:
    session.add(p)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # The order lock serialises requests; the unique index is the backstop.
        raise Conflict(
            "This order already has an open prescription request.",
            code="prescription_already_requested",
        ) from None


def request_prescription(
    session: Session,
    patient: User,
    body: PrescriptionRequestIn,
    attachment: Attachment | None = None,
) -> Prescription:
    """Open a prescription request for the patient's order that awaits one."""
    settings = get_settings()
    content_type = None
    if attachment is not None:
        if len(attachment.data) > settings.prescription_attachment_max_bytes:
            raise AttachmentTooLarge(
                f"The attachment is larger than "
                f"{settings.prescription_attachment_max_bytes // (1024 * 1024)} MB.",
                details={"max_bytes": settings.prescription_attachment_max_bytes},
            )
        if not attachment.data:
            raise InvalidInput("The attachment is empty.", code="empty_attachment")
        content_type = workflow.sniff_attachment_type(attachment.data[:16])
        if content_type is None:
            raise InvalidInput(
                "The attachment must be a JPEG, PNG or PDF file.",
                code="unsupported_attachment_type",
                details={"allowed": sorted(workflow.EXTENSIONS)},
            )
        claimed = workflow.claimed_attachment_types(attachment.filename, attachment.declared_type)
        if claimed - {content_type}:
            # A file dressed up as something else is refused, not silently relabelled.
            raise InvalidInput(
                f"The attachment's name or type says {', '.join(sorted(claimed))} but its "
                f"content is {content_type}.",
                code="attachment_type_mismatch",
                details={"detected": content_type, "claimed": sorted(claimed)},
            )

    order = _lock_order_awaiting_prescription(session, patient, body.order_id)
    at = now_utc()
    p = Prescription(
        id=uuid.uuid4(),
        order_id=order.id,
        patient_id=patient.id,
        status=S.REQUESTED,
        legal_name=body.patient_name,
        id_number_hmac=id_number_hmac(body.id_number),
        id_number_masked=workflow.mask_id_number(body.id_number),
        symptoms=body.symptoms,
        allergies=body.allergies,
        current_medication=body.current_medication,
        requested_at=at,
        refills=0,
        fills_used=0,
    )
    _add_open_request(session, p)
    if attachment is not None:
        session.add(
            PrescriptionAttachment(
                prescription_id=p.id,
                content_type=content_type,
                size_bytes=len(attachment.data),
                sha256=hashlib.sha256(attachment.data).hexdigest(),
                data=attachment.data,
            )
        )
    _audit(session, p, "requested", actor=patient, from_status=None, to_status=S.REQUESTED, at=at)
    _event(session, "prescription.requested", p, order.store_id, requested_at=at.isoformat())
    session.flush()
    return p


def _check_last_fill_handed_over(session: Session, first: Prescription) -> None:
    """Refuse a refill while an earlier fill of the prescription is approved but not yet handed
    over: one course at a time (the caller holds the first prescription's lock)."""
    pending = session.scalar(
        select(Prescription.order_id)
        .where(
            or_(Prescription.id == first.id, Prescription.refill_of == first.id),
            Prescription.status == S.APPROVED,
        )
        .limit(1)
    )
    if pending is not None:
        raise Conflict(
            "The last fill of this prescription has not been handed over yet.",
            code="refill_too_early",
            details={"order_id": str(pending)},
        )


def request_refill(
    session: Session, patient: User, prescription_id: uuid.UUID, order_id: uuid.UUID
) -> Prescription:
    """Fill a later order of the patient from a prescription already filled once, when the doctor
    allowed refills and it is still valid.

    The refill carries the doctor's signed payload and signature unchanged, so it goes straight to
    the store's pharmacist, who checks it as any prescription (signature now, validity, items
    within it) and counts the fill on the first prescription when approving.
    """
    first = session.get(Prescription, prescription_id)
    if first is None or first.patient_id != patient.id:
        raise _not_found()
    if first.refill_of is not None:
        first = session.get(Prescription, first.refill_of)
    order = _lock_order_awaiting_prescription(session, patient, order_id)
    first = _lock(session, first.id)
    if first.status not in (S.APPROVED, S.DISPENSED):
        raise Conflict(
            "Only a prescription that was filled once can be refilled.",
            code="prescription_not_filled",
            details={"status": first.status.value},
        )
    _check_last_fill_handed_over(session, first)
    at = now_utc()
    if at >= first.expires_at:
        raise Conflict(
            "This prescription has expired.",
            code="prescription_expired",
            details={"expired_at": first.expires_at.isoformat()},
        )
    if first.fills_used > first.refills:
        raise Conflict(
            "This prescription has no refills left.",
            code="no_refills_left",
            details={"refills": first.refills, "fills_used": first.fills_used},
        )
    p = Prescription(
        id=uuid.uuid4(),
        order_id=order.id,
        patient_id=patient.id,
        status=S.ISSUED,
        legal_name=first.legal_name,
        id_number_hmac=first.id_number_hmac,
        id_number_masked=first.id_number_masked,
        symptoms=first.symptoms,
        allergies=first.allergies,
        current_medication=first.current_medication,
        requested_at=at,
        doctor_id=first.doctor_id,
        claimed_at=first.claimed_at,
        items=first.items,
        refills=first.refills,
        issued_at=first.issued_at,
        expires_at=first.expires_at,
        signed_payload=first.signed_payload,
        signature=first.signature,
        doctor_key_id=first.doctor_key_id,
        refill_of=first.id,
        fills_used=0,
    )
    _add_open_request(session, p)
    _audit(
        session,
        p,
        "refill_requested",
        actor=patient,
        from_status=None,
        to_status=S.ISSUED,
        at=at,
        details={"refill_of": str(first.id), "fills_used": first.fills_used},
    )
    _event(
        session,
        "prescription.issued",
        p,
        order.store_id,
        refill_of=str(first.id),
        expires_at=p.expires_at.isoformat(),
    )
    session.flush()
    return p


def attachment_for(
    session: Session, user: User, prescription_id: uuid.UUID
) -> PrescriptionAttachment:
    """Return the attachment of a prescription the user may see, or 404."""
    p = get_visible(session, user, prescription_id)
    att = session.get(PrescriptionAttachment, p.id)
    if att is None:
        raise NotFound("This request has no attachment.", code="attachment_not_found")
    return att


# --- doctors' keys -----------------------------------------------------------------------------


def register_key(session: Session, doctor: User, public_key_b64: str) -> DoctorKey:
    """Register a doctor's public key; it signs nothing until an admin approves it."""
    try:
        raw = signing.parse_public_key(public_key_b64)
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code="invalid_public_key") from None
    if session.scalar(select(DoctorKey.id).where(DoctorKey.public_key == raw)) is not None:
        raise Conflict("This key is already registered.", code="key_already_registered")
    key = DoctorKey(doctor_id=doctor.id, public_key=raw, status=DoctorKeyStatus.PENDING)
    session.add(key)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("This key is already registered.", code="key_already_registered") from None
    return key


def list_keys(
    session: Session,
    *,
    doctor_id: int | None = None,
    status: DoctorKeyStatus | None = None,
    limit: int = 20,
    after_id: int | None = None,
) -> list[DoctorKey]:
    query = select(DoctorKey).order_by(DoctorKey.id).limit(limit)
    if doctor_id is not None:
        query = query.where(DoctorKey.doctor_id == doctor_id)
    if status is not None:
        query = query.where(DoctorKey.status == status)
    if after_id is not None:
        query = query.where(DoctorKey.id > after_id)
    return list(session.scalars(query))


def _lock_doctor_keys(session: Session, key_id: int) -> tuple[DoctorKey, list[DoctorKey]]:
    doctor_id = session.scalar(select(DoctorKey.doctor_id).where(DoctorKey.id == key_id))
    if doctor_id is None:
        raise NotFound("No such key.", code="key_not_found")
    # All of the doctor's keys, by id: approvals and revocations of one doctor serialise here.
    keys = list(
        session.scalars(
            select(DoctorKey)
            .where(DoctorKey.doctor_id == doctor_id)
            .order_by(DoctorKey.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    return next(k for k in keys if k.id == key_id), keys


def approve_key(session: Session, admin: User, key_id: int) -> DoctorKey:
    """Make a pending key the doctor's active key; the previous active key is superseded."""
    key, keys = _lock_doctor_keys(session, key_id)
    if key.status is not DoctorKeyStatus.PENDING:
        raise Conflict(
            f"Only a pending key can be approved; this one is {key.status.value}.",
            code="key_not_pending",
            details={"status": key.status.value},
        )
    at = now_utc()
    for other in keys:
        if other.status is DoctorKeyStatus.ACTIVE:
            other.status = DoctorKeyStatus.SUPERSEDED
            other.superseded_at = at
    # The old key leaves 'active' before the new one enters it (one-active unique index).
    session.flush()
    key.status = DoctorKeyStatus.ACTIVE
    key.approved_at = at
    key.approved_by = admin.id
    session.flush()
    return key


def revoke_key(session: Session, admin: User, key_id: int) -> DoctorKey:
    """Revoke a key: nothing it signed is accepted any more (repeating it changes nothing)."""
    key, _ = _lock_doctor_keys(session, key_id)
    if key.status is not DoctorKeyStatus.REVOKED:
        key.status = DoctorKeyStatus.REVOKED
        key.revoked_at = now_utc()
        key.revoked_by = admin.id
        session.flush()
    return key


def _key_for_share(session: Session, key_id: int) -> DoctorKey:
    # FOR SHARE: a revocation (FOR UPDATE) waits until this decision commits, so no signature is
    # accepted after its key's revocation has committed.
    return session.scalar(
        select(DoctorKey)
        .where(DoctorKey.id == key_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )


def active_key(session: Session, doctor_id: int) -> DoctorKey | None:
    return session.scalar(
        select(DoctorKey).where(
            DoctorKey.doctor_id == doctor_id, DoctorKey.status == DoctorKeyStatus.ACTIVE
        )
    )


# --- doctor: claim, sign, issue, decline ------------------------------------------------------


def claim(session: Session, doctor: User, prescription_id: uuid.UUID) -> Prescription:
    """Take a waiting request; of doctors claiming at once exactly one wins, the others get 409."""
    at = now_utc()
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
        raise _not_found()
    if won is None:
        if p.status is S.CLAIMED and p.doctor_id == doctor.id:
            return p  # a repeated claim by the same doctor
        if p.doctor_id is not None and p.doctor_id != doctor.id:
            raise Conflict(
                "Another doctor has claimed this request.", code="claimed_by_another_doctor"
            )
        raise workflow.IllegalPrescriptionTransition(
            f"This request is {p.status.value} and cannot be claimed.",
            details={"status": p.status.value},
        )
    _audit(session, p, "claimed", actor=doctor, from_status=S.REQUESTED, to_status=S.CLAIMED, at=at)
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
            f"A prescription is valid for at most {settings.prescription_max_valid_hours} hours.",
            code="validity_too_long",
        )
    ids = sorted(item.product_id for item in body.items)
    products = {
        prod.id: prod for prod in session.scalars(select(Product).where(Product.id.in_(ids)))
    }
    unknown = [pid for pid in ids if pid not in products]
    if unknown:
        raise InvalidInput(
            "Unknown products.", code="unknown_product", details={"product_ids": unknown}
        )
    controlled = [pid for pid in ids if products[pid].controlled]
    if controlled:
        raise InvalidInput(
            "Controlled medicines are never sold online.",
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
        "validity": {"issued_at": _iso(issued_at), "expires_at": _iso(expires_at)},
        "patient": {
            "id": p.patient_id,
            "legal_name": p.legal_name,
            "id_number_masked": p.id_number_masked,
        },
        "doctor": {"id": doctor.id, "name": doctor.name, "key_id": key.id},
        "issued_at": _iso(issued_at),
    }


def prepare_signing_payload(
    session: Session, doctor: User, prescription_id: uuid.UUID, body: SigningPayloadIn
) -> tuple[bytes, DoctorKey, datetime]:
    """Build and keep the canonical payload the doctor is to sign; return it with the key and
    the time by which it must be signed."""
    p = _lock(session, prescription_id)
    _check_doctor_owns(p, doctor)
    if p.status is not S.CLAIMED:
        raise workflow.IllegalPrescriptionTransition(
            f"This prescription is {p.status.value}; nothing is left to sign.",
            details={"status": p.status.value},
        )
    key = active_key(session, doctor.id)
    if key is None:
        raise Conflict(
            "You have no approved signing key; register one and have it approved.",
            code="no_active_key",
        )
    # Whole seconds: the signed times are exactly the stored ones.
    issued_at = now_utc().replace(microsecond=0)
    document = _payload_document(session, p, doctor, key, body, issued_at)
    payload = signing.canonical_bytes(document)
    p.pending_payload = payload
    p.pending_payload_at = issued_at
    p.pending_key_id = key.id
    session.flush()
    window = timedelta(minutes=get_settings().prescription_signing_window_minutes)
    return payload, key, issued_at + window


def _clear_pending(p: Prescription) -> None:
    """Forget the prepared signing payload (issued, declined or cancelled: no longer signable)."""
    p.pending_payload = None
    p.pending_payload_at = None
    p.pending_key_id = None


def _b64(value: str, code: str, what: str) -> bytes:
    try:
        return signing.b64decode(value, what=what)
    except signing.KeyFormatError as exc:
        raise InvalidInput(str(exc), code=code) from None


def issue(
    session: Session, doctor: User, prescription_id: uuid.UUID, payload_b64: str, signature_b64: str
) -> Prescription:
    """Accept the doctor's signature over the prepared payload and issue the prescription."""
    p = _lock(session, prescription_id)
    _check_doctor_owns(p, doctor)
    if p.status is not S.CLAIMED:
        raise workflow.IllegalPrescriptionTransition(
            f"This prescription is {p.status.value} and cannot be issued.",
            details={"status": p.status.value},
        )
    if p.pending_payload is None or p.pending_key_id is None:
        raise Conflict("Ask for the signing payload first.", code="no_pending_payload")
    payload = _b64(payload_b64, "invalid_payload", "payload")
    signature = _b64(signature_b64, "invalid_signature", "signature")
    # Constant time: the comparison must not reveal how much of a forged payload matched.
    if not hmac.compare_digest(payload, p.pending_payload):
        raise InvalidInput(
            "The payload is not the one prepared for signing: it was changed.",
            code="payload_mismatch",
        )
    at = now_utc()
    window = timedelta(minutes=get_settings().prescription_signing_window_minutes)
    if at > p.pending_payload_at + window:
        raise Conflict("The signing payload is too old; ask for a new one.", code="payload_stale")
    key = _key_for_share(session, p.pending_key_id)
    if key.status is DoctorKeyStatus.REVOKED:
        raise InvalidInput("The signing key has been revoked.", code="key_revoked")
    if key.status is not DoctorKeyStatus.ACTIVE:
        raise InvalidInput(
            "The signing key is no longer your active key; ask for a new payload.",
            code="key_not_active",
        )
    if not signing.verify(key.public_key, payload, signature):
        raise InvalidInput(
            "The signature does not verify against your active key.", code="invalid_signature"
        )
    document = json.loads(payload)
    p.items = document["items"]
    p.refills = document["refills"]
    p.issued_at = _parse_iso(document["validity"]["issued_at"])
    p.expires_at = _parse_iso(document["validity"]["expires_at"])
    p.signed_payload = payload
    p.signature = signature
    p.doctor_key_id = key.id
    _clear_pending(p)
    _move(
        session,
        p,
        S.ISSUED,
        "issued",
        actor=doctor,
        at=at,
        details={"key_id": key.id, "expires_at": p.expires_at.isoformat()},
    )
    _event(
        session,
        "prescription.issued",
        p,
        _store_id(session, p),
        doctor_id=doctor.id,
        expires_at=p.expires_at.isoformat(),
    )
    session.flush()
    return p


def decline(
    session: Session, doctor: User, prescription_id: uuid.UUID, reason: str
) -> Prescription:
    """Decline a claimed request with a reason; the order is cancelled and its stock freed."""
    order, p = _lock_order_then_prescription(session, prescription_id)
    _check_doctor_owns(p, doctor)
    at = now_utc()
    _move(session, p, S.DECLINED, "declined", actor=doctor, at=at, reason=reason)
    p.decline_reason = reason
    _clear_pending(p)
    _event(session, "prescription.declined", p, order.store_id, reason=reason)
    session.flush()
    lifecycle.cancel(
        session, order, reason=f"The doctor declined the prescription: {reason}", actor_id=doctor.id
    )
    return p


# --- pharmacist: review ------------------------------------------------------------------------


def review_since(p: Prescription) -> datetime:
    """When the prescription reached the pharmacist: at issue, or a refill when it was asked for."""
    return max(p.issued_at, p.requested_at)


def signed_document(p: Prescription) -> dict:
    """The prescription as the doctor signed it (the stored columns are a copy of this)."""
    return json.loads(p.signed_payload)


def verify_stored_signature(session: Session, p: Prescription) -> tuple[bool, DoctorKey | None]:
    """Check the stored signature now: (verifies, key). A revoked key never verifies."""
    key = _key_for_share(session, p.doctor_key_id) if p.doctor_key_id else None
    if key is None or p.signature is None or p.signed_payload is None:
        return False, key
    if key.status is DoctorKeyStatus.REVOKED:
        return False, key
    return signing.verify(key.public_key, p.signed_payload, p.signature), key


def _course_ends(
    durations: Mapping[int, int], issued_at: datetime, at: datetime, fills_before: int
) -> dict[int, date]:
    """The day each prescribed product's course ends, for the fill approved at `at`.

    The first fill's course starts when the doctor signed. A refill's starts once the fills
    before it are taken, and not before it is handed over: the later of the two.
    """
    if fills_before == 0:
        return {pid: workflow.course_end(issued_at, days) for pid, days in durations.items()}
    return {
        pid: max(
            workflow.course_end(issued_at, days * (fills_before + 1)),
            workflow.course_end(at, days),
        )
        for pid, days in durations.items()
    }


def _ensure_lots_last_course(
    session: Session, order: Order, course_ends: dict[int, date], today: date
) -> list[dict]:
    """Move the reservation of prescription items to lots that last the course, or refuse."""
    lines = [line for line in order.lines if line.rx_only and line.product_id in course_ends]
    lot_ids = {a.lot_id for line in lines for a in line.allocations}
    expiry = dict(session.execute(select(Lot.id, Lot.expiry_date).where(Lot.id.in_(lot_ids))).all())
    short_lines = [
        line
        for line in lines
        if any(expiry[a.lot_id] < course_ends[line.product_id] for a in line.allocations)
    ]
    if not short_lines:
        return []
    store = session.get(Store, order.store_id)
    # Every lot of the store for these products, locked by id: the same order as checkout's
    # reservation, so a review and a checkout never deadlock.
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(Lot)
            .where(
                Lot.store_id == order.store_id,
                Lot.product_id.in_(sorted({line.product_id for line in short_lines})),
            )
            .order_by(Lot.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    shelf_floor = today + timedelta(days=store.min_shelf_life_days)
    plans = []
    missing = []
    for line in short_lines:
        ends = course_ends[line.product_id]
        earliest = max(ends, shelf_floor)
        short = [a for a in line.allocations if lots[a.lot_id].expiry_date < ends]
        needed = sum(a.quantity for a in short)
        candidates = [
            workflow.LotStock(lot.id, lot.expiry_date, lot.on_hand - lot.reserved)
            for lot in lots.values()
            if lot.product_id == line.product_id
        ]
        chosen = workflow.choose_lots(candidates, needed, earliest)
        if not chosen:
            missing.append(
                {
                    "product_id": line.product_id,
                    "quantity": needed,
                    "course_ends": ends.isoformat(),
                }
            )
            continue
        plans.append((line, short, chosen))
    if missing:
        raise Conflict(
            "The store's stock of a prescribed medicine expires before the course ends, "
            "and no longer-dated lot can cover it.",
            code="lots_expire_before_course_end",
            details={"items": missing},
        )
    moved = []
    for line, short, chosen in plans:
        current = {a.lot_id: a for a in line.allocations}
        for alloc in short:
            lots[alloc.lot_id].reserved -= alloc.quantity
            session.delete(alloc)
            del current[alloc.lot_id]
        session.flush()
        for lot_id, units in chosen:
            lots[lot_id].reserved += units
            if lot_id in current:
                current[lot_id].quantity += units
            else:
                session.add(LotAllocation(order_line_id=line.id, lot_id=lot_id, quantity=units))
        session.flush()
        session.expire(line, ["allocations"])
        moved.append(
            {
                "product_id": line.product_id,
                "from_lots": sorted(a.lot_id for a in short),
                "to_lots": sorted(lot_id for lot_id, _ in chosen),
            }
        )
    return moved


def review(
    session: Session, pharmacist: User, prescription_id: uuid.UUID, body: ReviewIn
) -> tuple[Prescription, Order, list[dict]]:
    """Approve (releasing the order) or reject (cancelling it) an issued prescription."""
    p = session.get(Prescription, prescription_id)
    if p is None or _store_id(session, p) not in pharmacist.store_ids:
        raise _not_found()
    order, p = _lock_order_then_prescription(session, prescription_id)
    at = now_utc()
    if p.status in workflow.USED_STATES:
        raise Conflict(
            "This prescription has already been used.",
            code="prescription_used",
            details={"status": p.status.value},
        )
    if p.status is S.EXPIRED:
        raise Conflict("This prescription has expired.", code="prescription_expired")
    if p.status is not S.ISSUED:
        raise workflow.IllegalPrescriptionTransition(
            f"This prescription is {p.status.value}, not issued; there is nothing to review.",
            details={"status": p.status.value},
        )

    if body.decision == "reject":
        _move(session, p, S.REJECTED, "rejected", actor=pharmacist, at=at, reason=body.reason)
        p.reviewed_by = pharmacist.id
        p.reviewed_at = at
        p.review_reason = body.reason
        _event(session, "prescription.rejected", p, order.store_id, reason=body.reason)
        session.flush()
        lifecycle.cancel(
            session,
            order,
            reason=f"The pharmacist rejected the prescription: {body.reason}",
            actor_id=pharmacist.id,
        )
        return p, order, []

    verifies, key = verify_stored_signature(session, p)
    if key is not None and key.status is DoctorKeyStatus.REVOKED:
        raise Conflict(
            "The doctor's signing key has been revoked; this prescription cannot be accepted.",
            code="key_revoked",
        )
    if not verifies:
        raise Conflict("The doctor's signature does not verify.", code="invalid_signature")
    # Decide from what was signed, not from copies that could have been altered.
    document = signed_document(p)
    expires_at = _parse_iso(document["validity"]["expires_at"])
    issued_at = _parse_iso(document["validity"]["issued_at"])
    if at >= expires_at:
        raise Conflict(
            "This prescription has expired.",
            code="prescription_expired",
            details={"expired_at": expires_at.isoformat()},
        )
    # Fills are counted on the first prescription; a refill locks it (after the order and the
    # refill, the order every path takes) so two refills racing cannot both take the last fill.
    first = p if p.refill_of is None else _lock(session, p.refill_of)
    if first.fills_used > document["refills"]:
        raise Conflict(
            "This prescription has already been used."
            + (" It has no refills left." if first is not p else ""),
            code="prescription_used",
            details={"refills": document["refills"], "fills_used": first.fills_used},
        )
    if document["patient"]["id"] != order.patient_id or document["prescription_id"] != str(
        first.id
    ):
        raise Conflict("The prescription is for another patient.", code="patient_mismatch")
    if first is not p:
        _check_last_fill_handed_over(session, first)
    if order.status is not OrderStatus.AWAITING_PRESCRIPTION:
        raise Conflict(
            "The order is not waiting for a prescription.",
            code="order_not_awaiting_prescription",
            details={"order_status": order.status.value},
        )
    prescribed = [
        workflow.PrescribedItem(i["product_id"], i["quantity"], i["duration_days"])
        for i in document["items"]
    ]
    problems = workflow.items_outside_prescription(
        [workflow.OrderedItem(li.product_id, li.quantity, li.rx_only) for li in order.lines],
        prescribed,
    )
    if problems:
        raise InvalidInput(
            "The order holds prescription medicines beyond what the prescription allows.",
            code="exceeds_prescription",
            details={"items": problems},
        )
    fills_before = 0 if first is p else first.fills_used
    ends = _course_ends(workflow.durations_by_product(prescribed), issued_at, at, fills_before)
    moved = _ensure_lots_last_course(session, order, ends, at.date())
    _move(
        session,
        p,
        S.APPROVED,
        "approved",
        actor=pharmacist,
        at=at,
        reason=body.reason,
        details={"reallocated": moved} if moved else None,
    )
    first.fills_used += 1
    if first is not p:
        _audit(
            session,
            first,
            "refill_approved",
            actor=pharmacist,
            from_status=first.status,
            to_status=first.status,
            at=at,
            reason=f"Refill {p.id} approved for order {order.id}: fill {first.fills_used} of "
            f"{first.refills + 1}.",
            details={
                "refill": str(p.id),
                "order_id": str(order.id),
                "fills_used": first.fills_used,
            },
        )
    p.reviewed_by = pharmacist.id
    p.reviewed_at = at
    p.review_reason = body.reason
    _event(session, "prescription.approved", p, order.store_id, pharmacist_id=pharmacist.id)
    session.flush()
    lifecycle.transition(
        session,
        order,
        OrderStatus.RELEASED,
        actor_id=pharmacist.id,
        reason="Prescription approved by the pharmacist.",
        at=at,
    )
    return p, order, moved


def repeat_dispense_warnings(session: Session, p: Prescription) -> list[dict]:
    """Warn when the patient had the same medicine (same product or generic) dispensed lately."""
    days = get_settings().prescription_repeat_warning_days
    if days <= 0:
        return []
    if p.items:
        product_ids = sorted({item["product_id"] for item in p.items})
    else:
        product_ids = sorted(
            session.scalars(
                select(OrderLine.product_id).where(
                    OrderLine.order_id == p.order_id, OrderLine.rx_only.is_(True)
                )
            )
        )
    if not product_ids:
        return []
    generics = dict(
        session.execute(
            select(Product.id, func.lower(Product.generic_name)).where(Product.id.in_(product_ids))
        ).all()
    )
    since = now_utc() - timedelta(days=days)
    rows = session.execute(
        select(OrderLine.product_id, func.lower(Product.generic_name), Order.id, Order.completed_at)
        .join(Order, Order.id == OrderLine.order_id)
        .join(Product, Product.id == OrderLine.product_id)
        .where(
            Order.patient_id == p.patient_id,
            Order.status == OrderStatus.COMPLETED,
            Order.completed_at >= since,
            Order.id != p.order_id,
            or_(
                OrderLine.product_id.in_(product_ids),
                func.lower(Product.generic_name).in_(sorted(set(generics.values()))),
            ),
        )
        .order_by(Order.completed_at.desc())
    ).all()
    warnings = []
    seen = set()
    for product_id, generic, order_id, completed_at in rows:
        for ours, our_generic in generics.items():
            if (ours == product_id or our_generic == generic) and ours not in seen:
                seen.add(ours)
                warnings.append(
                    {
                        "code": "recently_dispensed",
                        "message": (
                            f"The patient had this medicine dispensed on "
                            f"{completed_at.date().isoformat()} (within {days} days)."
                        ),
                        "product_id": ours,
                        "order_id": order_id,
                        "dispensed_at": completed_at,
                    }
                )
    return warnings


# --- queue and audit ---------------------------------------------------------------------------


def _encode_cursor(at: datetime, pid: uuid.UUID) -> str:
    raw = json.dumps([at.isoformat(), str(pid)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, pid = json.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(pid)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("The cursor is not valid.", code="invalid_cursor") from None


def queue(
    session: Session, user: User, *, limit: int, cursor: str | None
) -> tuple[list[dict], str | None]:
    """What awaits the caller, oldest first: doctors see unclaimed requests and their own claimed
    ones; pharmacists see issued, unexpired prescriptions of their stores."""
    settings = get_settings()
    now = now_utc()
    after = _decode_cursor(cursor) if cursor else None
    if user.role is Role.DOCTOR:
        since = Prescription.requested_at
        query = select(Prescription).where(
            or_(
                Prescription.status == S.REQUESTED,
                and_(Prescription.status == S.CLAIMED, Prescription.doctor_id == user.id),
            )
        )
    elif user.role is Role.PHARMACIST:
        since = func.greatest(Prescription.issued_at, Prescription.requested_at)
        query = (
            select(Prescription)
            .join(Order, Order.id == Prescription.order_id)
            .where(
                Prescription.status == S.ISSUED,
                Prescription.expires_at > now,
                Order.store_id.in_(user.store_ids),
            )
        )
    else:
        raise Forbidden("Only doctors and pharmacists have a prescription queue.")
    if after is not None:
        query = query.where(
            or_(since > after[0], and_(since == after[0], Prescription.id > after[1]))
        )
    rows = list(session.scalars(query.order_by(since, Prescription.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    store_ids = _store_ids(session, rows)
    with_attachment = (
        set(
            session.scalars(
                select(PrescriptionAttachment.prescription_id).where(
                    PrescriptionAttachment.prescription_id.in_([p.id for p in rows])
                )
            )
        )
        if user.role is Role.DOCTOR
        else set()
    )
    items = []
    for p in rows:
        item = {
            "id": p.id,
            "order_id": p.order_id,
            "status": p.status,
            "requested_at": p.requested_at,
        }
        if user.role is Role.DOCTOR:
            item |= {
                "waited_minutes": workflow.waited_minutes(p.requested_at, now),
                "overdue": p.status is S.REQUESTED
                and (
                    p.escalated_at is not None
                    or workflow.is_overdue(p.requested_at, now, settings.prescription_claim_minutes)
                ),
                "claimed_by_me": p.doctor_id == user.id,
                "symptoms": p.symptoms,
                "allergies": p.allergies,
                "current_medication": p.current_medication,
                "has_attachment": p.id in with_attachment,
            }
        else:
            item |= {
                "waited_minutes": workflow.waited_minutes(review_since(p), now),
                "overdue": p.review_flagged_at is not None
                or workflow.is_overdue(review_since(p), now, settings.prescription_review_minutes),
                "store_id": store_ids[p.order_id],
                "issued_at": p.issued_at,
                "expires_at": p.expires_at,
            }
        items.append(item)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = _encode_cursor(
            last.requested_at if user.role is Role.DOCTOR else review_since(last), last.id
        )
    return items, next_cursor


def audit_entries(
    session: Session, user: User, prescription_id: uuid.UUID, *, limit: int, after_id: int | None
) -> list[PrescriptionAudit]:
    """The audit trail of a prescription the user may see, oldest first."""
    p = get_visible(session, user, prescription_id)
    query = (
        select(PrescriptionAudit)
        .where(PrescriptionAudit.prescription_id == p.id)
        .order_by(PrescriptionAudit.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(PrescriptionAudit.id > after_id)
    return list(session.scalars(query))


# --- views -------------------------------------------------------------------------------------


def to_view(session: Session, user: User, p: Prescription) -> dict:
    """The prescription as the caller may see it (warnings for pharmacists and admins)."""
    att = session.execute(
        select(PrescriptionAttachment.content_type, PrescriptionAttachment.size_bytes).where(
            PrescriptionAttachment.prescription_id == p.id
        )
    ).first()
    doctor = session.get(User, p.doctor_id) if p.doctor_id else None
    settings = get_settings()
    now = now_utc()
    review_overdue = p.status is S.ISSUED and (
        p.review_flagged_at is not None
        or workflow.is_overdue(review_since(p), now, settings.prescription_review_minutes)
    )
    warnings = (
        repeat_dispense_warnings(session, p) if user.role in (Role.PHARMACIST, Role.ADMIN) else []
    )
    return {
        "id": p.id,
        "order_id": p.order_id,
        "status": p.status,
        "patient": {
            "id": p.patient_id,
            "legal_name": p.legal_name,
            "id_number_masked": p.id_number_masked,
        },
        "symptoms": p.symptoms,
        "allergies": p.allergies,
        "current_medication": p.current_medication,
        "attachment": (
            {
                "content_type": att[0],
                "size_bytes": att[1],
                "url": f"/api/v1/prescriptions/{p.id}/attachment",
            }
            if att
            else None
        ),
        "requested_at": p.requested_at,
        "escalated": p.escalated_at is not None,
        "doctor": {"id": doctor.id, "name": doctor.name} if doctor else None,
        "claimed_at": p.claimed_at,
        "items": p.items,
        "refills": p.refills,
        "issued_at": p.issued_at,
        "expires_at": p.expires_at,
        "doctor_key_id": p.doctor_key_id,
        "signature": signing.b64encode(p.signature) if p.signature else None,
        "decline_reason": p.decline_reason,
        "review_overdue": review_overdue,
        "reviewed_at": p.reviewed_at,
        "review_reason": p.review_reason,
        # Counted on the first prescription, across its refills.
        "fills_used": (
            session.get(Prescription, p.refill_of).fills_used if p.refill_of else p.fills_used
        ),
        "refill_of": p.refill_of,
        "dispensed_at": p.dispensed_at,
        "warnings": warnings,
    }


# --- timeouts (called by the periodic tasks) ---------------------------------------------------

SWEEP_BATCH = 500


def escalate_unclaimed(session: Session, now: datetime | None = None) -> int:
    """Escalate requests no doctor took in time (once each): flag, audit, outbox event."""
    now = now or now_utc()
    limit_at = now - timedelta(minutes=get_settings().prescription_claim_minutes)
    rows = list(
        session.scalars(
            select(Prescription)
            .where(
                Prescription.status == S.REQUESTED,
                Prescription.escalated_at.is_(None),
                Prescription.requested_at <= limit_at,
            )
            .order_by(Prescription.requested_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    store_ids = _store_ids(session, rows)
    for p in rows:
        p.escalated_at = now
        _audit(
            session,
            p,
            "escalated",
            actor=None,
            from_status=p.status,
            to_status=p.status,
            at=now,
            reason="No doctor took the request in time.",
        )
        _event(
            session,
            "prescription.escalated",
            p,
            store_ids[p.order_id],
            waited_minutes=workflow.waited_minutes(p.requested_at, now),
        )
    session.flush()
    return len(rows)


def flag_unreviewed(session: Session, now: datetime | None = None) -> int:
    """Flag to the store issued prescriptions no pharmacist reviewed in time (once each)."""
    now = now or now_utc()
    limit_at = now - timedelta(minutes=get_settings().prescription_review_minutes)
    rows = list(
        session.scalars(
            select(Prescription)
            .where(
                Prescription.status == S.ISSUED,
                Prescription.review_flagged_at.is_(None),
                func.greatest(Prescription.issued_at, Prescription.requested_at) <= limit_at,
                Prescription.expires_at > now,
            )
            .order_by(Prescription.issued_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    store_ids = _store_ids(session, rows)
    for p in rows:
        p.review_flagged_at = now
        _audit(
            session,
            p,
            "review_overdue",
            actor=None,
            from_status=p.status,
            to_status=p.status,
            at=now,
            reason="No pharmacist reviewed the prescription in time.",
        )
        _event(
            session,
            "prescription.review_overdue",
            p,
            store_ids[p.order_id],
            waited_minutes=workflow.waited_minutes(review_since(p), now),
        )
    session.flush()
    return len(rows)


def expire_issued(session: Session, now: datetime | None = None) -> int:
    """Mark issued prescriptions past their validity as expired (once each)."""
    now = now or now_utc()
    rows = list(
        session.scalars(
            select(Prescription)
            .where(Prescription.status == S.ISSUED, Prescription.expires_at <= now)
            .order_by(Prescription.expires_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    store_ids = _store_ids(session, rows)
    for p in rows:
        _move(session, p, S.EXPIRED, "expired", actor=None, at=now, reason="Validity passed.")
        _event(session, "prescription.expired", p, store_ids[p.order_id])
    session.flush()
    return len(rows)


# --- entry points for other domains ------------------------------------------------------------


def prescription_id_for_order(session: Session, order_id: uuid.UUID) -> uuid.UUID | None:
    """The order's latest prescription request, if any (for the order response)."""
    return session.scalar(
        select(Prescription.id)
        .where(Prescription.order_id == order_id)
        .order_by(Prescription.requested_at.desc(), Prescription.id)
        .limit(1)
    )


def prescription_ids_for_orders(
    session: Session, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Each order's latest prescription request (for a page of order responses, in one query)."""
    if not order_ids:
        return {}
    rows = session.execute(
        select(Prescription.order_id, Prescription.id)
        .where(Prescription.order_id.in_(order_ids))
        .distinct(Prescription.order_id)
        .order_by(Prescription.order_id, Prescription.requested_at.desc(), Prescription.id)
    )
    return dict(rows.all())


def on_order_cancelled(session: Session, order) -> None:
    """Close the order's open prescription request, if any; an approved fill that was not handed
    over is given back (counted again as unused on the first prescription)."""
    rows = session.scalars(
        select(Prescription)
        .where(
            Prescription.order_id == order.id,
            Prescription.status.in_(workflow.OPEN_STATES | {S.APPROVED}),
        )
        .order_by(Prescription.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    at = now_utc()
    reason = order.cancel_reason or "The order was cancelled."
    for p in rows:
        if p.status is S.APPROVED:
            _give_back_fill(session, p, at)
        _move(session, p, S.CANCELLED, "cancelled", actor=None, at=at, reason=reason)
        p.closed_reason = reason
        _clear_pending(p)
    session.flush()


def _give_back_fill(session: Session, p: Prescription, at: datetime) -> None:
    if p.refill_of is None:
        p.fills_used -= 1
        return
    first = _lock(session, p.refill_of)  # after the order and the refill, as review locks
    first.fills_used -= 1
    _audit(
        session,
        first,
        "refill_returned",
        actor=None,
        from_status=first.status,
        to_status=first.status,
        at=at,
        reason=f"Refill {p.id}: its order was cancelled before the hand-over; the fill is "
        "given back.",
        details={"refill": str(p.id), "order_id": str(p.order_id), "fills_used": first.fills_used},
    )


def mark_dispensed(session: Session, order, *, actor_id: int | None = None) -> None:
    """Record that the order's prescription was dispensed (used once)."""
    p = session.scalar(
        select(Prescription)
        .where(Prescription.order_id == order.id, Prescription.status == S.APPROVED)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if p is None:
        return  # no prescription, or already dispensed: nothing to record
    actor = session.get(User, actor_id) if actor_id is not None else None
    at = now_utc()
    _move(session, p, S.DISPENSED, "dispensed", actor=actor, at=at)
    p.dispensed_at = at
    session.flush()


def fhir_export(session: Session, user: User, prescription_id: uuid.UUID) -> dict:
    """The prescription as a FHIR R4 Bundle (MedicationRequests + Provenance with the signature)."""
    p = get_visible(session, user, prescription_id)
    if p.signed_payload is None or p.signature is None:
        raise Conflict(
            "Only a signed prescription can be exported.",
            code="not_issued",
            details={"status": p.status.value},
        )
    if p.refill_of is not None:
        # A refill fills the same signed prescription again: export that prescription.
        p = session.get(Prescription, p.refill_of)
    document = signed_document(p)
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
        generated_at=now_utc(),
    )
