"""Write the point ledger: accrue on completion, reverse on a confirmed refund, expire old points.

Every write for one member runs under that member's transaction-scoped advisory lock, so an
expiry and a reversal of the same points never both take them. (A row lock would need UPDATE on
the ledger, which the runtime role does not have: the ledger is append-only.) Each movement has
a unique `source_key`, inserted with ON CONFLICT DO NOTHING: an event handled twice, even by two
processes at once, moves points once.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from o2o.members import levels
from o2o.members.models import ACCRUAL, EXPIRY, REVERSAL, PointEntry
from o2o.orders.models import Order

# The first key of the two-key advisory locks this module takes (the second is the user id).
LOCK_SPACE = 18_001
# Members whose points one expiry statement handles; the task repeats until none is left.
EXPIRY_BATCH = 500


def lock_member(session: Session, user_id: int) -> None:
    """Serialise ledger writes for one member until the transaction ends."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(:space, :user_id)"),
        {"space": LOCK_SPACE, "user_id": user_id},
    )


def _insert(session: Session, **values) -> int | None:
    """Insert one movement unless its source was handled already; return its id or None."""
    return session.execute(
        pg_insert(PointEntry)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["source_key"])
        .returning(PointEntry.id)
    ).scalar_one_or_none()


def accrue(
    session: Session, order: Order, *, points_per_unit: int, expire_days: int, at: datetime
) -> int | None:
    """Credit the points of a completed order (what it cost the patient); once per order."""
    lock_member(session, order.patient_id)
    spend = max(0, order.total_minor)
    return _insert(
        session,
        user_id=order.patient_id,
        kind=ACCRUAL,
        points=levels.points_for(spend, points_per_unit),
        spend_minor=spend,
        currency=order.currency,
        order_id=order.id,
        source_key=f"order:{order.id}",
        at=at,
        expires_at=at + timedelta(days=expire_days),
        note=None,
    )


@dataclass(frozen=True)
class Standing:
    """What an order's accrual still counts for: points (0 once expired) and spend."""

    accrual: PointEntry
    points: int
    spend_minor: int
    expired: bool


def standing(session: Session, order_id: uuid.UUID) -> Standing | None:
    """Return what the order's points and spend stand at now (None if it earned nothing)."""
    accrual = session.scalar(
        select(PointEntry).where(PointEntry.kind == ACCRUAL, PointEntry.order_id == order_id)
    )
    if accrual is None:
        return None
    reversed_points, reversed_spend = session.execute(
        select(
            func.coalesce(func.sum(PointEntry.points), 0),
            func.coalesce(func.sum(PointEntry.spend_minor), 0),
        ).where(PointEntry.kind == REVERSAL, PointEntry.order_id == order_id)
    ).one()
    expired = bool(
        session.scalar(
            select(func.count()).where(
                PointEntry.kind == EXPIRY, PointEntry.accrual_id == accrual.id
            )
        )
    )
    points = 0 if expired else accrual.points + reversed_points
    return Standing(accrual, points, accrual.spend_minor + reversed_spend, expired=expired)


def reverse(
    session: Session,
    *,
    order_id: uuid.UUID,
    refund_id: uuid.UUID,
    paid_minor: int,
    points_per_unit: int,
    at: datetime,
) -> int | None:
    """Take back the points and spend of money refunded on a completed order; once per refund.

    `paid_minor` is what the patient has paid once every confirmed refund is taken off. The
    order keeps the points of min(what it earned on, what is paid): a refund of money the
    accrual never counted (a late delivery's fee, taken off the order's total before completion)
    takes nothing back. Points already expired are not taken twice.
    """
    patient_id = session.scalar(select(Order.patient_id).where(Order.id == order_id))
    if patient_id is None:
        return None
    lock_member(session, patient_id)
    now = standing(session, order_id)
    if now is None:
        return None  # not completed yet: the accrual will count what is paid then
    target_spend = max(0, min(now.spend_minor, paid_minor))
    spend_delta = target_spend - now.spend_minor
    target_points = levels.points_for(target_spend, points_per_unit)
    points_delta = 0 if now.expired else min(0, target_points - now.points)
    if spend_delta == 0 and points_delta == 0:
        return None
    return _insert(
        session,
        user_id=patient_id,
        kind=REVERSAL,
        points=points_delta,
        spend_minor=spend_delta,
        currency=now.accrual.currency,
        order_id=order_id,
        source_key=f"refund:{refund_id}",
        at=at,
        expires_at=None,
        note=f"Refund {refund_id}",
    )


_DUE_MEMBERS = """
    SELECT DISTINCT a.user_id FROM member_point_entries a
    WHERE a.kind = 'accrual' AND a.expires_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM member_point_entries x WHERE x.kind = 'expiry' AND x.accrual_id = a.id
      )
    ORDER BY a.user_id
    LIMIT :batch
"""

# One expiry per due accrual: what is left of its points once reversals are taken off (zero
# when all were reversed, so it is marked done and not read again).
_EXPIRE = """
    INSERT INTO member_point_entries
        (user_id, kind, points, spend_minor, currency, order_id, source_key, accrual_id, at,
         expires_at, note)
    SELECT a.user_id, 'expiry',
           -GREATEST(0, a.points + COALESCE((
               SELECT sum(r.points) FROM member_point_entries r
               WHERE r.kind = 'reversal' AND r.order_id = a.order_id), 0)),
           0, a.currency, a.order_id, 'expiry:' || a.id, a.id, :now, NULL,
           'Points of ' || to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' expired'
    FROM member_point_entries a
    WHERE a.kind = 'accrual' AND a.expires_at <= :now AND a.user_id = ANY(:members)
      AND NOT EXISTS (
          SELECT 1 FROM member_point_entries x WHERE x.kind = 'expiry' AND x.accrual_id = a.id
      )
    ON CONFLICT (source_key) DO NOTHING
    RETURNING -points
"""


def expire_due(session: Session, *, now: datetime, batch: int = EXPIRY_BATCH) -> tuple[int, int]:
    """Expire the points of one batch of members whose accruals are past their expiry; return
    (members handled, points expired). Running it again expires nothing twice."""
    members = list(session.scalars(text(_DUE_MEMBERS), {"now": now, "batch": batch}))
    if not members:
        return 0, 0
    for user_id in members:  # ascending ids: two sweeps at once never deadlock
        lock_member(session, user_id)
    expired = session.scalars(text(_EXPIRE), {"now": now, "members": members}).all()
    return len(members), sum(expired)
