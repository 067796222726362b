"""Parcels at a community pickup point: what the leader holds, the hand-over to the patient who
shows the pickup code, the runs the leader expects, and the return of parcels nobody collected
within the hold (a periodic sweep, idempotent).
"""

import logging
import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatch import runs
from dispatch.run_models import ParcelStatus, PickupParcel, PickupRun, RunStatus
from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput, NotFound
from o2o.orders import lifecycle
from o2o.orders.models import Order, OrderStatus
from o2o.security import codes_equal
from stores.pickup_points import PickupPoint

log = logging.getLogger(__name__)

P = ParcelStatus
S = OrderStatus
# What the patient's app shows as a QR code: the order and its pickup code (as at a store).
PICKUP_QR_PREFIX = "O2O-PICKUP"


class WrongPickupCode(InvalidInput):
    code = "wrong_pickup_code"


class PickupCodeLocked(Conflict):
    code = "pickup_code_locked"


def parcel_not_found() -> NotFound:
    """The 404 for a parcel that is not waiting at this point."""
    return NotFound("No such parcel is waiting at this pickup point.", code="parcel_not_found")


def parcels_at(session: Session, point: PickupPoint) -> list[dict]:
    """List the parcels waiting at the point, the longest-waiting first."""
    rows = session.execute(
        select(PickupParcel, Order.pickup_code_failures)
        .join(Order, Order.id == PickupParcel.order_id)
        .where(PickupParcel.point_id == point.id, PickupParcel.status == P.AT_POINT)
        .order_by(PickupParcel.arrived_at, PickupParcel.order_id)
    ).all()
    allowed = get_settings().pickup_code_max_failures
    return [
        {
            "order_id": parcel.order_id,
            "arrived_at": parcel.arrived_at,
            "hold_expires_at": parcel.hold_expires_at,
            "code_tries_left": max(0, allowed - failures),
        }
        for parcel, failures in rows
    ]


def runs_to(session: Session, point: PickupPoint, *, since: datetime) -> list[dict]:
    """List the runs to the point departing from `since` on, with the leader's hand-off code."""
    runs = session.scalars(
        select(PickupRun)
        .where(PickupRun.point_id == point.id, PickupRun.departs_at >= since)
        .order_by(PickupRun.departs_at)
        .limit(20)
    ).all()
    views = []
    for run in runs:
        parcels = session.scalar(
            select(func.count()).where(
                PickupParcel.run_id == run.id,
                PickupParcel.status != P.CANCELLED,
            )
        )
        views.append(
            {
                "id": run.id,
                "departs_at": run.departs_at,
                "arrives_at": run.arrives_at,
                "status": run.status.value,
                "arrived_at": run.arrived_at,
                "handoff_code": run.handoff_code,
                "parcels": parcels,
            }
        )
    return views


def _shown_code(order_id: uuid.UUID, shown: str) -> str | None:
    """Return the code in what the patient showed, or None for another order's QR."""
    shown = shown.strip()
    if not shown.startswith(PICKUP_QR_PREFIX + ":"):
        return shown
    parts = shown.split(":")
    try:
        same = len(parts) == 3 and uuid.UUID(parts[1]) == order_id
    except ValueError:
        same = False
    return parts[2] if same else None


def hand_over(
    session: Session,
    point: PickupPoint,
    order_id: uuid.UUID,
    pickup_code: str,
    *,
    actor_id: int,
    now: datetime | None = None,
) -> Order:
    """Hand a parcel waiting at the point to the patient who shows its pickup code.

    A wrong code counts a try (flushed: the caller keeps it, then answers 422); after the
    allowed tries the code is locked (409) and the parcel goes back with the next return.
    """
    now = now or clock.now()
    parcel = session.get(PickupParcel, order_id)
    if parcel is None or parcel.point_id != point.id:
        raise parcel_not_found()
    order = lifecycle.lock_order(session, order_id)
    parcel = session.get(PickupParcel, order_id, with_for_update=True, populate_existing=True)
    if parcel.status is P.COLLECTED:
        raise Conflict("This parcel was collected already.", code="parcel_collected")
    if parcel.status is not P.AT_POINT or order.status is not S.READY:
        raise parcel_not_found()
    allowed = get_settings().pickup_code_max_failures
    if order.pickup_code_failures >= allowed:
        raise PickupCodeLocked(
            "Too many wrong pickup codes: the code is locked. The store will contact the patient."
        )
    code = _shown_code(order.id, pickup_code)
    if code is None or not codes_equal(code, order.pickup_code):
        order.pickup_code_failures += 1
        session.flush()
        left = allowed - order.pickup_code_failures
        raise WrongPickupCode(
            f"The pickup code is wrong; {left} {'try' if left == 1 else 'tries'} left.",
            details={"tries_left": left},
        )
    parcel.status = P.COLLECTED
    parcel.collected_at = now
    lifecycle.complete(session, order, actor_id=actor_id, at=now)
    session.flush()
    return order


def return_reason(point: PickupPoint) -> str:
    """Say, for the patient's timeline, why a parcel went back."""
    return (
        f"Not collected at the pickup point {point.name} within "
        f"{get_settings().pickup_hold_hours} h: the parcel went back to the store and the "
        "payment is refunded."
    )


def return_uncollected(session: Session, *, now: datetime, batch: int = 200) -> tuple[int, int]:
    """Send back up to `batch` parcels whose hold ran out; return (returned, looked at).

    The orders are locked first (SKIP LOCKED), then each parcel, as every other path does (the
    hand-over at the point, the run's pickup and drop): a parcel's sweep never waits for an
    order while holding its parcel, so it cannot deadlock with a hand-over, and a second sweep
    at the same time takes other orders or none. The parcel's state is checked again under its
    order's lock, so a sweep run twice returns each parcel once.
    """
    order_ids = session.scalars(
        select(PickupParcel.order_id)
        .join(Order, Order.id == PickupParcel.order_id)
        .where(PickupParcel.status == P.AT_POINT, PickupParcel.hold_expires_at <= now)
        .order_by(PickupParcel.hold_expires_at, PickupParcel.order_id)
        .limit(batch)
        .with_for_update(of=Order, skip_locked=True)
    ).all()
    returned = 0
    for order_id in order_ids:
        order = lifecycle.lock_order(session, order_id)
        parcel = session.get(PickupParcel, order_id, with_for_update=True, populate_existing=True)
        if parcel.status is not P.AT_POINT or parcel.hold_expires_at > now:
            continue
        try:
            with session.begin_nested():
                parcel.status = P.RETURNED
                parcel.returned_at = now
                point = session.get(PickupPoint, parcel.point_id)
                lifecycle.cancel(session, order, reason=return_reason(point))
            returned += 1
        except Exception:
            # One bad parcel must not block the rest; it stays due and is retried next sweep.
            log.exception("could not return parcel of order %s", order_id)
    return returned, len(order_ids)


def rebook_stranded(session: Session, *, now: datetime) -> int:
    """Put parcels still booked on a run that has left onto their point's next run (their orders
    locked first, SKIP LOCKED, as in `return_uncollected`)."""
    stranded = session.scalars(
        select(PickupParcel.order_id)
        .join(PickupRun, PickupRun.id == PickupParcel.run_id)
        .join(Order, Order.id == PickupParcel.order_id)
        .where(PickupParcel.status == P.BOOKED, PickupRun.status != RunStatus.SCHEDULED)
        .order_by(PickupParcel.order_id)
        .limit(500)
        .with_for_update(of=Order, skip_locked=True)
    ).all()
    moved = 0
    for order_id in stranded:
        order = lifecycle.lock_order(session, order_id)
        if order.status in (S.COMPLETED, S.CANCELLED):
            continue
        if order.status is S.READY:
            runs.on_parcel_ready(session, order, now=now)
        else:
            parcel = session.get(PickupParcel, order_id)
            runs.rebook(session, parcel, order, now=now)
        moved += 1
    return moved
