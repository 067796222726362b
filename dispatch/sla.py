"""SLA rules as plain functions: the deadline, the predicted finish of an open delivery from its
phase, at-risk and breached, the job priority that follows, and the compensation for a breach.

Pure: no database. The monitor (`dispatch/monitor.py`) applies the same rules in one SQL statement
over every open delivery; a test checks the SQL against these functions phase by phase.
"""

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatch.eta import EtaModel


class Phase(enum.StrEnum):
    """Where an open delivery stands, as far as its finish is concerned."""

    RELEASED = "released"  # the store has not started preparing
    PREPARING = "preparing"
    # Being prepared, its courier already on the way (the job opens before ready): whichever
    # comes later, the parcel or the courier.
    CLAIMED_WHILE_PREPARING = "claimed_while_preparing"
    AWAITING_COURIER = "awaiting_courier"  # ready; the job is open or not yet opened
    CLAIMED = "claimed"  # a courier is on the way to the store
    PICKED_UP = "picked_up"  # out for delivery


class Risk(enum.StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    BREACHED = "breached"


PRIORITY_NORMAL = 0
PRIORITY_AT_RISK = 1
PRIORITY_BREACHED = 2

LATE_DELIVERY = "delivered_late"


@dataclass(frozen=True)
class Assumptions:
    """What the monitor assumes where it knows nothing better (Settings)."""

    courier_wait_minutes: float
    handover_minutes: float


def remaining_minutes(
    phase: Phase,
    eta: EtaModel,
    assumptions: Assumptions,
    *,
    store_to_dropoff_m: float,
    minutes_since_release: float = 0.0,
    courier_to_store_m: float | None = None,
    courier_to_dropoff_m: float | None = None,
    minutes_since_pickup: float = 0.0,
    minutes_until_job_opens: float = 0.0,
) -> float:
    """Predict the minutes from now until the parcel is handed over at the door.

    The wait for a courier starts as the job opens: once the parcel is ready, or later for a
    scheduled delivery, whose job opens in time for its slot (`minutes_until_job_opens`).
    """
    to_dropoff = eta.travel_minutes(store_to_dropoff_m)
    wait = assumptions.courier_wait_minutes
    until_open = max(0.0, minutes_until_job_opens)
    if phase is Phase.RELEASED:
        rest = max(eta.prep_minutes, until_open) + wait + to_dropoff
    elif phase is Phase.PREPARING:
        # Preparation started some time after release; assume at release (optimistic, so a slow
        # store is flagged by the margin, not by guesswork).
        prep_left = max(0.0, eta.prep_minutes - minutes_since_release)
        rest = max(prep_left, until_open) + wait + to_dropoff
    elif phase is Phase.CLAIMED_WHILE_PREPARING:
        to_store = (
            eta.travel_minutes(courier_to_store_m) if courier_to_store_m is not None else wait
        )
        rest = max(eta.prep_minutes - minutes_since_release, to_store) + to_dropoff
    elif phase is Phase.AWAITING_COURIER:
        rest = until_open + wait + to_dropoff
    elif phase is Phase.CLAIMED:
        to_store = (
            eta.travel_minutes(courier_to_store_m) if courier_to_store_m is not None else wait
        )
        rest = to_store + to_dropoff
    else:
        rest = (
            eta.travel_minutes(courier_to_dropoff_m)
            if courier_to_dropoff_m is not None
            else max(0.0, to_dropoff - minutes_since_pickup)
        )
    return rest + assumptions.handover_minutes


def assess(now: datetime, deadline: datetime, finish: datetime, *, margin_minutes: float) -> Risk:
    """Classify an open delivery: breached once the deadline passed, at risk within the margin."""
    if now > deadline:
        return Risk.BREACHED
    if finish > deadline - timedelta(minutes=margin_minutes):
        return Risk.AT_RISK
    return Risk.ON_TRACK


def priority_for(risk: Risk) -> int:
    """Return the job priority for a risk (higher goes first and reaches further)."""
    return {
        Risk.ON_TRACK: PRIORITY_NORMAL,
        Risk.AT_RISK: PRIORITY_AT_RISK,
        Risk.BREACHED: PRIORITY_BREACHED,
    }[risk]


def compensation_minor(
    policy: str, *, delivery_fee_minor: int, subtotal_minor: int, fixed_minor: int = 0
) -> int:
    """Return the compensation owed for a breach, never more than the order's total."""
    if policy == "waive_delivery_fee":
        amount = delivery_fee_minor
    elif policy == "fixed":
        amount = fixed_minor
    elif policy == "none":
        amount = 0
    else:
        raise ValueError(f"unknown compensation policy {policy!r}")
    return max(0, min(amount, subtotal_minor + delivery_fee_minor))


def is_on_time(delivered_at: datetime, deadline: datetime) -> bool:
    return delivered_at <= deadline
