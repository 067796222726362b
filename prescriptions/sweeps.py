"""The timeouts, run by the periodic tasks: escalate requests no doctor took in time, flag to the
store issued prescriptions no pharmacist reviewed in time, expire those past their validity,
purge the attachments of closed requests after the retention period.

Each acts once per row (it only picks rows not yet flagged or moved) and skips rows another
sweep holds, so overlapping runs never double up.
"""

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from prescriptions import trail, workflow
from prescriptions.models import Prescription, PrescriptionAttachment, PrescriptionAudit
from prescriptions.workflow import PrescriptionStatus

S = PrescriptionStatus
SWEEP_BATCH = 500


def escalate_unclaimed(session: Session, now: datetime | None = None) -> int:
    """Escalate requests no doctor took in time (once each): flag, audit, outbox event."""
    now = now or clock.now()
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
    store_ids = trail.store_ids_of(session, rows)
    for p in rows:
        p.escalated_at = now
        trail.audit(
            session,
            p,
            "escalated",
            actor=None,
            from_status=p.status,
            to_status=p.status,
            at=now,
            reason="No doctor took the request in time.",
        )
        trail.emit(
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
    now = now or clock.now()
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
    store_ids = trail.store_ids_of(session, rows)
    for p in rows:
        p.review_flagged_at = now
        trail.audit(
            session,
            p,
            "review_overdue",
            actor=None,
            from_status=p.status,
            to_status=p.status,
            at=now,
            reason="No pharmacist reviewed the prescription in time.",
        )
        trail.emit(
            session,
            "prescription.review_overdue",
            p,
            store_ids[p.order_id],
            waited_minutes=workflow.waited_minutes(trail.review_since(p), now),
        )
    session.flush()
    return len(rows)


def expire_issued(session: Session, now: datetime | None = None) -> int:
    """Mark issued prescriptions past their validity as expired (once each)."""
    now = now or clock.now()
    rows = list(
        session.scalars(
            select(Prescription)
            .where(Prescription.status == S.ISSUED, Prescription.expires_at <= now)
            .order_by(Prescription.expires_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    store_ids = trail.store_ids_of(session, rows)
    for p in rows:
        trail.move(session, p, S.EXPIRED, "expired", actor=None, at=now, reason="Validity passed.")
        trail.emit(session, "prescription.expired", p, store_ids[p.order_id])
    session.flush()
    return len(rows)


# Closed requests whose attachment is kept only for the retention period.
PURGEABLE = (S.CANCELLED, S.EXPIRED)


def purge_attachments(session: Session, now: datetime | None = None) -> int:
    """Delete the attachments of requests cancelled or expired longer ago than the retention
    period; the audit trail keeps each one's hash, size and type."""
    now = now or clock.now()
    cutoff = now - timedelta(days=get_settings().prescription_attachment_retention_days)
    closed_at = (
        select(PrescriptionAudit.prescription_id, func.max(PrescriptionAudit.at).label("at"))
        .group_by(PrescriptionAudit.prescription_id)
        .subquery()
    )
    rows = session.execute(
        select(Prescription, PrescriptionAttachment)
        .join(PrescriptionAttachment, PrescriptionAttachment.prescription_id == Prescription.id)
        .join(closed_at, closed_at.c.prescription_id == Prescription.id)
        .where(Prescription.status.in_(PURGEABLE), closed_at.c.at < cutoff)
        .order_by(Prescription.id)
        .limit(SWEEP_BATCH)
        .with_for_update(of=PrescriptionAttachment, skip_locked=True)
    ).all()
    for p, attachment in rows:
        details = {
            "sha256": attachment.sha256,
            "size_bytes": attachment.size_bytes,
            "content_type": attachment.content_type,
        }
        session.delete(attachment)
        trail.audit(
            session,
            p,
            "attachment_purged",
            actor=None,
            from_status=p.status,
            to_status=p.status,
            at=now,
            details=details,
        )
    session.flush()
    return len(rows)


def return_stale_claims(session: Session, now: datetime | None = None) -> int:
    """Put back in the queue the claims whose doctor prepared nothing in time."""
    now = now or clock.now()
    limit_at = now - timedelta(minutes=get_settings().prescription_claim_timeout_minutes)
    rows = list(
        session.scalars(
            select(Prescription)
            .where(
                Prescription.status == S.CLAIMED,
                Prescription.claimed_at <= limit_at,
                Prescription.pending_payload_at.is_(None),
            )
            .order_by(Prescription.claimed_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    for p in rows:
        workflow.check(p.status, S.REQUESTED)
        details = {"doctor_id": p.doctor_id}
        p.status = S.REQUESTED
        p.doctor_id = None
        p.claimed_at = None
        trail.audit(
            session,
            p,
            "claim_returned",
            actor=None,
            from_status=S.CLAIMED,
            to_status=S.REQUESTED,
            at=now,
            reason="The doctor did not act on the claim in time.",
            details=details,
        )
    session.flush()
    return len(rows)
