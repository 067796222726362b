"""The patient's request: a prescription asked for an order that awaits one, with an optional
attachment checked by its content, and the attachment read back."""

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o import clock, ratelimit
from o2o.config import get_settings
from o2o.errors import Conflict, DomainError, InvalidInput, NotFound
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.users.models import User
from prescriptions import identity, trail, workflow
from prescriptions.models import Prescription, PrescriptionAttachment
from prescriptions.schemas import PrescriptionRequestIn
from prescriptions.workflow import PrescriptionStatus

S = PrescriptionStatus


class AttachmentTooLarge(DomainError):
    """The attachment is over the size limit (413)."""

    status_code = 413
    code = "attachment_too_large"


@dataclass(frozen=True)
class Attachment:
    """An uploaded file as received. Its type is decided from the bytes; the client's file name
    and declared type are only checked not to contradict them."""

    data: bytes
    filename: str | None = None
    declared_type: str | None = None


def _check_quota(session: Session, patient: User, size: int) -> None:
    # The patient's row is locked first, so two uploads at once cannot both slip under the quota.
    session.execute(select(User.id).where(User.id == patient.id).with_for_update())
    stored = session.scalar(
        select(func.coalesce(func.sum(PrescriptionAttachment.size_bytes), 0))
        .join(Prescription, Prescription.id == PrescriptionAttachment.prescription_id)
        .where(Prescription.patient_id == patient.id)
    )
    quota = get_settings().prescription_attachment_quota_bytes
    if stored + size > quota:
        raise InvalidInput(
            _(
                "Your stored attachments would exceed your quota; attachments of closed requests are removed after the retention period."
            ),
            code="attachment_quota_exceeded",
            details={"quota_bytes": quota, "stored_bytes": stored},
        )


def lock_order_awaiting_prescription(session: Session, patient: User, order_id: uuid.UUID) -> Order:
    """Lock the patient's order that waits for a prescription and has no open request yet."""
    owner = session.scalar(select(Order.patient_id).where(Order.id == order_id))
    if owner is None or owner != patient.id:
        raise NotFound(_("No such order."), code="order_not_found")
    order = lifecycle.lock_order(session, order_id)
    if order.status is not OrderStatus.AWAITING_PRESCRIPTION:
        raise Conflict(
            _("This order is not waiting for a prescription."),
            code="order_not_awaiting_prescription",
            details={"order_status": order.status.value},
        )
    if not order.is_rx:
        raise Conflict(_("This order needs no prescription."), code="prescription_not_needed")
    open_id = session.scalar(
        select(Prescription.id).where(
            Prescription.order_id == order.id,
            Prescription.status.in_(workflow.OPEN_STATES),
        )
    )
    if open_id is not None:
        raise Conflict(
            _("This order already has an open prescription request."),
            code="prescription_already_requested",
            details={"prescription_id": str(open_id)},
        )
    return order


def add_open_request(session: Session, p: Prescription) -> None:
    """Add an open request; 409 if the order already has one."""
    session.add(p)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # The order lock serialises requests; the unique index is the backstop.
        raise Conflict(
            _("This order already has an open prescription request."),
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
                _("The attachment is larger than {value} MB.").format(
                    value=settings.prescription_attachment_max_bytes // (1024 * 1024)
                ),
                details={"max_bytes": settings.prescription_attachment_max_bytes},
            )
        if not attachment.data:
            raise InvalidInput(_("The attachment is empty."), code="empty_attachment")
        content_type = workflow.sniff_attachment_type(attachment.data[:16])
        if content_type is None:
            raise InvalidInput(
                _("The attachment must be a JPEG, PNG or PDF file."),
                code="unsupported_attachment_type",
                details={"allowed": sorted(workflow.EXTENSIONS)},
            )
        claimed = workflow.claimed_attachment_types(attachment.filename, attachment.declared_type)
        if claimed - {content_type}:
            # A file dressed up as something else is refused, not silently relabelled.
            raise InvalidInput(
                _(
                    "The attachment's name or type says {claimed} but its content is {content_type}."
                ).format(claimed=", ".join(sorted(claimed)), content_type=content_type),
                code="attachment_type_mismatch",
                details={"detected": content_type, "claimed": sorted(claimed)},
            )

    ratelimit.hit(
        ratelimit.limit(settings.prescription_request_rate_limit),
        "rx-request",
        str(patient.id),
        message=_("Too many prescription requests; try again later."),
    )
    order = lock_order_awaiting_prescription(session, patient, body.order_id)
    if attachment is not None:
        _check_quota(session, patient, len(attachment.data))
    at = clock.now()
    pepper_version, id_hash = identity.hash_id_number(body.id_number)
    p = Prescription(
        id=uuid.uuid4(),
        order_id=order.id,
        patient_id=patient.id,
        status=S.REQUESTED,
        legal_name=body.patient_name,
        id_number_hmac=id_hash,
        id_number_pepper_version=pepper_version,
        id_number_masked=workflow.mask_id_number(body.id_number),
        symptoms=body.symptoms,
        allergies=body.allergies,
        current_medication=body.current_medication,
        requested_at=at,
        refills=0,
        fills_used=0,
    )
    add_open_request(session, p)
    # The number is in hand: earlier rows holding it under a previous pepper move to this one.
    identity.upgrade_hashes(session, body.id_number)
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
    trail.audit(
        session, p, "requested", actor=patient, from_status=None, to_status=S.REQUESTED, at=at
    )
    trail.emit(session, "prescription.requested", p, order.store_id, requested_at=at.isoformat())
    session.flush()
    return p


def attachment_for(
    session: Session, user: User, prescription_id: uuid.UUID
) -> PrescriptionAttachment:
    """Return the attachment of a prescription the user may see, or 404."""
    p = trail.get_visible(session, user, prescription_id)
    att = session.get(PrescriptionAttachment, p.id)
    if att is None:
        raise NotFound(_("This request has no attachment."), code="attachment_not_found")
    return att
