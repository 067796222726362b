"""The members' point ledger (append-only) and the delivery fees waived for a member's level."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from o2o.db import Base

ACCRUAL = "accrual"
REVERSAL = "reversal"
EXPIRY = "expiry"


class PointEntry(Base):
    """One movement of a member's points. Never updated or deleted (the runtime role may only
    insert and read): the balance is the sum of the entries, the history is the entries.

    `source_key` names what caused the movement (`order:<id>`, `refund:<id>`, `expiry:<entry
    id>`), unique, so an event handled twice moves points once.
    """

    __tablename__ = "member_point_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('accrual', 'reversal', 'expiry')", name="kind_known"),
        CheckConstraint(
            "(kind = 'accrual' AND points >= 0 AND spend_minor >= 0 AND order_id IS NOT NULL"
            " AND expires_at IS NOT NULL)"
            " OR (kind = 'reversal' AND points <= 0 AND spend_minor <= 0 AND order_id IS NOT NULL)"
            " OR (kind = 'expiry' AND points <= 0 AND spend_minor = 0 AND accrual_id IS NOT NULL)",
            name="signs_by_kind",
        ),
        Index("ix_member_point_entries_user_at", "user_id", "at"),
        Index("ix_member_point_entries_order", "order_id"),
        # The expiry sweep reads accruals by when they expire.
        Index(
            "ix_member_point_entries_expires_at",
            "expires_at",
            postgresql_where=text("kind = 'accrual'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int]
    # The spend this movement adds to (or takes from) the member's 12-month spend, minor units.
    spend_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT")
    )
    source_key: Mapped[str] = mapped_column(String(100), unique=True)
    # An expiry names the accrual whose points it takes away.
    accrual_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("member_point_entries.id", ondelete="RESTRICT"), unique=True
    )
    at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)


class DeliveryWaiver(Base):
    """A delivery fee a member's level waived at checkout: what, why, and at which level."""

    __tablename__ = "member_delivery_waivers"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
