"""Periodic prescription sweeps: escalate requests no doctor took, flag issued prescriptions no
pharmacist reviewed, expire prescriptions past their validity. Each is idempotent (it acts only
on rows not yet flagged or moved) and runs once per period however many beats send it."""

from o2o.celery_app import app
from o2o.db import session_scope
from o2o.tasks import once_per_period
from prescriptions import sweeps

SWEEP_PERIOD_S = 60


@app.task(name="prescriptions.escalate_unclaimed")
@once_per_period("prescriptions.escalate_unclaimed", SWEEP_PERIOD_S)
def escalate_unclaimed() -> int:
    """Escalate requests that waited too long for a doctor."""
    with session_scope() as session:
        return sweeps.escalate_unclaimed(session)


@app.task(name="prescriptions.flag_unreviewed")
@once_per_period("prescriptions.flag_unreviewed", SWEEP_PERIOD_S)
def flag_unreviewed() -> int:
    """Flag to their store issued prescriptions that waited too long for review."""
    with session_scope() as session:
        return sweeps.flag_unreviewed(session)


@app.task(name="prescriptions.expire_issued")
@once_per_period("prescriptions.expire_issued", SWEEP_PERIOD_S)
def expire_issued() -> int:
    """Mark issued prescriptions past their validity as expired."""
    with session_scope() as session:
        return sweeps.expire_issued(session)


@app.task(name="prescriptions.purge_attachments")
@once_per_period("prescriptions.purge_attachments", 3600)
def purge_attachments() -> int:
    """Purge the attachments of requests closed longer ago than the retention period."""
    with session_scope() as session:
        return sweeps.purge_attachments(session)


@app.task(name="prescriptions.return_stale_claims")
@once_per_period("prescriptions.return_stale_claims", SWEEP_PERIOD_S)
def return_stale_claims() -> int:
    """Put claims no doctor acted on in time back in the queue."""
    with session_scope() as session:
        return sweeps.return_stale_claims(session)
