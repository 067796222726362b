"""Members as the other floors reach them: the membership a patient sees, the points a completed
order earns and a confirmed refund takes back (subscribed to events by `o2o.wiring`), the
benefits checkout applies, and the waivers an order view shows."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from o2o import clock
from o2o.config import get_settings
from o2o.members import ledger, levels
from o2o.members.models import ACCRUAL, REVERSAL, DeliveryWaiver, PointEntry
from o2o.orders.models import Order

# Levels are by the spend of the last twelve months (a rolling window, not a calendar year).
SPEND_WINDOW = timedelta(days=365)
HISTORY_SHOWN = 20


def _ladder() -> tuple[levels.Level, ...]:
    s = get_settings()
    return levels.ladder(
        s.member_silver_spend_minor, s.member_gold_spend_minor, s.member_platinum_spend_minor
    )


def points_balance(session: Session, user_id: int) -> int:
    """Return a member's points: the sum of the ledger."""
    return session.scalar(
        select(func.coalesce(func.sum(PointEntry.points), 0)).where(PointEntry.user_id == user_id)
    )


def spend_12m(session: Session, user_id: int, *, now: datetime) -> int:
    """Return what a member spent on orders completed in the last twelve months, net of
    refunds (a refund counts against the order it refunds, whenever it came)."""
    accrual = aliased(PointEntry)
    return session.scalar(
        select(func.coalesce(func.sum(PointEntry.spend_minor), 0))
        .join(
            accrual,
            (accrual.order_id == PointEntry.order_id) & (accrual.kind == ACCRUAL),
        )
        .where(
            PointEntry.user_id == user_id,
            PointEntry.kind.in_((ACCRUAL, REVERSAL)),
            accrual.at > now - SPEND_WINDOW,
        )
    )


@dataclass(frozen=True)
class Membership:
    points: int
    level: levels.Level
    next_level: tuple[levels.Level, int] | None
    spend_12m_minor: int
    benefits: list[levels.Benefit]
    history: list[PointEntry]


def membership(session: Session, user_id: int, *, now: datetime | None = None) -> Membership:
    """Return a member's points, level, the next level and what it takes, and the benefits."""
    now = now or clock.now()
    spend = spend_12m(session, user_id, now=now)
    ladder = _ladder()
    level = levels.level_for(spend, ladder)
    history = session.scalars(
        select(PointEntry)
        .where(PointEntry.user_id == user_id)
        .order_by(PointEntry.at.desc(), PointEntry.id.desc())
        .limit(HISTORY_SHOWN)
    ).all()
    return Membership(
        points=points_balance(session, user_id),
        level=level,
        next_level=levels.next_level(spend, ladder),
        spend_12m_minor=spend,
        benefits=levels.benefits(level.name, get_settings().member_free_delivery_level),
        history=list(history),
    )


def on_order_completed(session: Session, order: Order, actor_id: int | None = None) -> None:
    """Credit a completed order's points (subscribed to `order_completed`)."""
    s = get_settings()
    ledger.accrue(
        session,
        order,
        points_per_unit=s.member_points_per_unit,
        expire_days=s.member_points_expire_days,
        at=order.completed_at or clock.now(),
    )


def on_refund_settled(
    session: Session, *, order_id: uuid.UUID, refund_id: uuid.UUID, paid_minor: int
) -> None:
    """Take back the points of refunded money (subscribed to payments' `refund_settled`)."""
    ledger.reverse(
        session,
        order_id=order_id,
        refund_id=refund_id,
        paid_minor=paid_minor,
        points_per_unit=get_settings().member_points_per_unit,
        at=clock.now(),
    )


def expire_points(session: Session, *, now: datetime | None = None) -> tuple[int, int]:
    """Expire one batch of points past their expiry; return (members, points)."""
    return ledger.expire_due(session, now=now or clock.now())


def apply_benefits(
    session: Session, order: Order, *, now: datetime | None = None
) -> DeliveryWaiver | None:
    """Apply the patient's level to a new order before its payment opens: a level with free
    delivery waives the delivery fee, recorded with its reason. Return the waiver, if any."""
    if order.delivery_fee_minor <= 0:
        return None
    now = now or clock.now()
    level = levels.level_for(spend_12m(session, order.patient_id, now=now), _ladder())
    if not levels.has_free_delivery(level.name, get_settings().member_free_delivery_level):
        return None
    waiver = DeliveryWaiver(
        order_id=order.id,
        user_id=order.patient_id,
        level=level.name,
        amount_minor=order.delivery_fee_minor,
        currency=order.currency,
        reason=f"Free delivery for {level.name.title()} members.",
        at=now,
    )
    session.add(waiver)
    order.delivery_fee_minor = 0
    session.flush()
    return waiver


def waivers_of(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, DeliveryWaiver]:
    """Return the delivery fees waived for these orders, by order id."""
    if not order_ids:
        return {}
    rows = session.scalars(select(DeliveryWaiver).where(DeliveryWaiver.order_id.in_(order_ids)))
    return {w.order_id: w for w in rows}
