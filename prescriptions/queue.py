"""The queue: what awaits a doctor (unclaimed requests and their own claimed ones) or a
pharmacist (issued, unexpired prescriptions of their stores), oldest first, keyset-paged."""

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from o2o import clock, pagination
from o2o.config import get_settings
from o2o.errors import Forbidden
from o2o.i18n import gettext as _
from o2o.orders.models import Order
from o2o.users.models import Role, User
from prescriptions import trail, workflow
from prescriptions.models import Prescription, PrescriptionAttachment
from prescriptions.workflow import PrescriptionStatus

S = PrescriptionStatus
# Doctors' and pharmacists' queues sort by different times: one's cursor is refused by the other.
QUEUE_LISTING = "prescription-queue"
_CURSOR_READERS = (pagination.timestamp, pagination.identifier)


def _listing(user: User) -> str:
    return f"{QUEUE_LISTING}:{user.role.value}"


def queue(
    session: Session, user: User, *, limit: int, cursor: str | None
) -> tuple[list[dict], str | None]:
    """What awaits the caller, oldest first: doctors see unclaimed requests and their own claimed
    ones; pharmacists see issued, unexpired prescriptions of their stores."""
    settings = get_settings()
    now = clock.now()
    after = pagination.decode_cursor(cursor, _listing(user), _CURSOR_READERS) if cursor else None
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
        raise Forbidden(_("Only doctors and pharmacists have a prescription queue."))
    if after is not None:
        query = query.where(
            or_(since > after[0], and_(since == after[0], Prescription.id > after[1]))
        )
    rows = list(session.scalars(query.order_by(since, Prescription.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    store_ids = trail.store_ids_of(session, rows)
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
                "waited_minutes": workflow.waited_minutes(trail.review_since(p), now),
                "overdue": p.review_flagged_at is not None
                or workflow.is_overdue(
                    trail.review_since(p), now, settings.prescription_review_minutes
                ),
                "store_id": store_ids[p.order_id],
                "issued_at": p.issued_at,
                "expires_at": p.expires_at,
            }
        items.append(item)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = pagination.encode_cursor(
            _listing(user),
            (last.requested_at if user.role is Role.DOCTOR else trail.review_since(last), last.id),
        )
    return items, next_cursor
