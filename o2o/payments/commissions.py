"""Community leaders' commissions: a pickup point's leader earns its commission rate of the goods
value of every order handed over there, accrued once when the order completes (subscribed to
`order_completed` by `o2o.wiring`), listed in the leader's statement and the payments report.

Days are the store's local days, like the rest of the payments report.
"""

import uuid
from datetime import date, datetime, timedelta

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from o2o.db import Base
from o2o.errors import InvalidInput
from o2o.orders.models import Fulfillment, Order
from stores.pickup_points import PickupPoint

BP = 10_000
MAX_DAYS = 366


class LeaderCommission(Base):
    """One completed pickup-point order's commission: written once, never changed."""

    __tablename__ = "leader_commissions"
    __table_args__ = (
        CheckConstraint("goods_minor >= 0", name="goods_nonnegative"),
        CheckConstraint("commission_minor >= 0", name="commission_nonnegative"),
        Index("ix_leader_commissions_point_accrued", "point_id", "accrued_at"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT"), primary_key=True
    )
    point_id: Mapped[int] = mapped_column(ForeignKey("pickup_points.id", ondelete="RESTRICT"))
    leader_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    goods_minor: Mapped[int] = mapped_column(BigInteger)
    rate_bp: Mapped[int]
    commission_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    accrued_at: Mapped[datetime]


def commission_of(goods_minor: int, rate_bp: int) -> int:
    """Return the commission on `goods_minor` at `rate_bp`, rounded half up to a minor unit."""
    return (2 * goods_minor * rate_bp + BP) // (2 * BP)


def on_order_completed(session: Session, order: Order, *, actor_id: int | None = None) -> None:
    """Accrue the leader's commission of a completed pickup-point order (once)."""
    if order.fulfillment is not Fulfillment.PICKUP_POINT or order.pickup_point_id is None:
        return
    point = session.get(PickupPoint, order.pickup_point_id)
    goods = order.subtotal_minor  # the goods value: no delivery fee on a pickup-point order
    session.execute(
        insert(LeaderCommission)
        .values(
            order_id=order.id,
            point_id=point.id,
            leader_user_id=point.leader_user_id,
            goods_minor=goods,
            rate_bp=point.commission_rate_bp,
            commission_minor=commission_of(goods, point.commission_rate_bp),
            currency=order.currency,
            accrued_at=order.completed_at,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )


def _range(from_day: date, to_day: date) -> dict:
    if to_day < from_day:
        raise InvalidInput("`to` is before `from`.", code="invalid_range")
    if (to_day - from_day).days >= MAX_DAYS:
        raise InvalidInput(f"Ask for at most {MAX_DAYS} days.", code="range_too_long")
    return {
        "from_day": from_day,
        "to_day": to_day,
        # Wide enough for every time zone; the local-day filter below is exact.
        "since": f"{from_day - timedelta(days=1)}T00:00:00+00:00",
        "until": f"{to_day + timedelta(days=2)}T00:00:00+00:00",
    }


_IN_RANGE = """
    FROM leader_commissions c
    JOIN pickup_points p ON p.id = c.point_id JOIN stores s ON s.id = p.store_id
    WHERE c.accrued_at >= :since AND c.accrued_at < :until
      AND (c.accrued_at AT TIME ZONE s.timezone)::date BETWEEN :from_day AND :to_day
"""


def report_rows(session: Session, *, from_day: date, to_day: date) -> list[dict]:
    """Return the commissions accrued per pickup point in [from_day, to_day] (local days)."""
    params = _range(from_day, to_day)
    rows = session.execute(
        text(
            "SELECT c.point_id AS pickup_point_id, p.name AS pickup_point_name, p.store_id, "
            "c.leader_user_id, c.currency, count(*) AS orders, "
            "sum(c.goods_minor)::bigint AS goods_minor, "
            "sum(c.commission_minor)::bigint AS commission_minor"
            + _IN_RANGE
            + "GROUP BY c.point_id, p.name, p.store_id, c.leader_user_id, c.currency "
            "ORDER BY c.point_id, c.currency"
        ),
        params,
    )
    return [dict(r._mapping) for r in rows]


def statement(session: Session, point: PickupPoint, *, from_day: date, to_day: date) -> dict:
    """Return a point's commissions in [from_day, to_day]: each order and the totals."""
    params = _range(from_day, to_day) | {"point_id": point.id}
    items = [
        dict(r._mapping)
        for r in session.execute(
            text(
                "SELECT c.order_id, c.accrued_at AS completed_at, c.goods_minor, c.rate_bp, "
                "c.commission_minor, c.currency"
                + _IN_RANGE
                + "AND c.point_id = :point_id ORDER BY c.accrued_at, c.order_id"
            ),
            params,
        )
    ]
    totals: dict[str, dict] = {}
    for item in items:
        total = totals.setdefault(
            item["currency"],
            {"currency": item["currency"], "orders": 0, "goods_minor": 0, "commission_minor": 0},
        )
        total["orders"] += 1
        total["goods_minor"] += item["goods_minor"]
        total["commission_minor"] += item["commission_minor"]
    return {
        "pickup_point_id": point.id,
        "leader_user_id": point.leader_user_id,
        "commission_rate_bp": point.commission_rate_bp,
        "from": from_day,
        "to": to_day,
        "items": items,
        "total": list(totals.values()),
    }
