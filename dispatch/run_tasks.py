"""Periodic pickup-point work: parcels nobody collected within the hold go back to the store (the
order cancelled, its stock returned and its payment refunded, once), and parcels left booked on a
run that has gone are put on the next one."""

import logging
from datetime import datetime

from dispatch import point_parcels
from o2o import clock
from o2o.celery_app import app
from o2o.db import session_scope
from o2o.tasks import once_per_period

log = logging.getLogger(__name__)

RETURNS_EVERY_S = 60


def return_uncollected_parcels(
    *, now: datetime | None = None, batch: int = 200, max_batches: int = 50
) -> int:
    """Return every parcel whose hold at its point ran out, batch by batch; return how many."""
    total = 0
    for _ in range(max_batches):
        with session_scope() as session:
            returned, seen = point_parcels.return_uncollected(
                session, now=now or clock.now(), batch=batch
            )
        total += returned
        if seen < batch:
            break
    with session_scope() as session:
        moved = point_parcels.rebook_stranded(session, now=now or clock.now())
    if total or moved:
        log.info("pickup points: %d parcels returned, %d moved to the next run", total, moved)
    return total


@app.task(name="dispatch.return_uncollected_parcels")
@once_per_period("dispatch.return_uncollected_parcels", RETURNS_EVERY_S)
def return_uncollected_parcels_task() -> int:
    """Periodic: parcels not collected at their pickup point within the hold go back."""
    return return_uncollected_parcels()
