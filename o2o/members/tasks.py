"""Periodic: expire members' points past their expiry (idempotent: a second run expires none)."""

import logging
from datetime import datetime

from o2o import clock
from o2o.celery_app import app
from o2o.db import session_scope
from o2o.members import service
from o2o.tasks import once_per_period

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 3600


def expire_points(*, now: datetime | None = None, max_batches: int = 100) -> int:
    """Expire every member's points past their expiry, a batch of members per transaction;
    return the points expired."""
    total = 0
    for _ in range(max_batches):
        with session_scope() as session:
            members, points = service.expire_points(session, now=now or clock.now())
        total += points
        if members == 0:
            break
    if total:
        log.info("expired %d member points", total)
    return total


@app.task(name="members.expire_points")
@once_per_period("members.expire_points", EXPIRE_EVERY_S)
def expire_points_task() -> int:
    """Periodic: expire members' points older than the configured period."""
    return expire_points()
