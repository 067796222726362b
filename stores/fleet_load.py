"""The wait for a courier that the fleet around a store implies (`store_fleet_load`).

Dispatch computes it every minute (it sees jobs and couriers; see dispatch/fleet.py) and writes
it at this floor, where search and checkout read it without importing dispatch. A store with no
fresh row has no estimate, and its ETA is preparation plus travel as before.
"""

import math
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o.config import get_settings
from stores.models import FleetLoad


def fresh_since(now: datetime) -> datetime:
    """Return the oldest `computed_at` of an estimate still fresh at `now`."""
    return now - timedelta(minutes=get_settings().fleet_load_max_age_minutes)


def whole_minutes(wait: float) -> int:
    """Return a stored wait as the whole minutes a promise adds (a float's noise rounded off)."""
    return math.ceil(round(wait, 6))


def preparation_hold(session: Session, store_id: int, *, now: datetime) -> float:
    """Return the minutes a new delivery order of this store may wait before preparation starts.

    Zero without a fresh estimate: then the store starts at once, as it always did.
    """
    hold = session.scalar(
        select(FleetLoad.hold_minutes).where(
            FleetLoad.store_id == store_id, FleetLoad.computed_at >= fresh_since(now)
        )
    )
    return float(hold or 0.0)
