"""Payment apps, an order's payment, its refunds, and the events the payment apps sent."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from o2o.db import Base


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    FAILED = "failed"
    # The order was cancelled (expired, or by its patient) before any capture.
    CANCELLED = "cancelled"


class PaymentMethod(enum.StrEnum):
    ONLINE = "online"
    AT_STORE = "at_store"


class RefundStatus(enum.StrEnum):
    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _values(e: type[enum.Enum]) -> list[str]:
    return [m.value for m in e]


payment_status_enum = ENUM(PaymentStatus, name="payment_status", values_callable=_values)
payment_method_enum = ENUM(PaymentMethod, name="payment_method", values_callable=_values)
refund_status_enum = ENUM(RefundStatus, name="refund_status", values_callable=_values)


class PaymentApp(Base):
    """A payment app (the chain's integration with its provider), registered by an admin."""

    __tablename__ = "payment_apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The outbox endpoint payment and refund requests are sent to, signed with the same secret.
    webhook_endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="RESTRICT")
    )
    # HMAC-SHA256 key; kept readable because every event is verified with it.
    secret: Mapped[str] = mapped_column(String(128))
    # After a rotation the previous key verifies until `previous_secret_until`.
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_until: Mapped[datetime | None]
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Payment(Base):
    """What an order is to pay, how, and what has been captured of it."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_nonnegative"),
        CheckConstraint(
            "captured_minor >= 0 AND captured_minor <= amount_minor", name="captured_range"
        ),
        CheckConstraint("method = 'at_store' OR app_id IS NOT NULL", name="online_has_app"),
        Index("ix_payments_captured_at", "captured_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), unique=True
    )
    app_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_apps.id", ondelete="RESTRICT"), index=True
    )
    method: Mapped[PaymentMethod] = mapped_column(payment_method_enum)
    status: Mapped[PaymentStatus] = mapped_column(payment_status_enum)
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    captured_minor: Mapped[int] = mapped_column(server_default=text("0"))
    due_at: Mapped[datetime | None]
    psp_reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    captured_at: Mapped[datetime | None]
    # Who took the money at the counter (pay-at-store pickups).
    collected_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    refunds: Mapped[list["Refund"]] = relationship(
        lazy="selectin", order_by="Refund.requested_at, Refund.id", viewonly=True
    )


class Refund(Base):
    """Money given back on a captured payment, requested from the app and confirmed by it."""

    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    payment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    # The order the money is given back for: the payment's own, or a part of the split order it
    # pays (each part is refunded and compensated on its own from the one payment).
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    # "order_cancelled", "late_delivery", "captured_after_cancel"
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[RefundStatus] = mapped_column(refund_status_enum)
    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    settled_at: Mapped[datetime | None]
    psp_reference: Mapped[str | None] = mapped_column(String(200))


class PaymentCharge(Base):
    """A further amount asked of a captured payment (a pharmacist's substitution cost more),
    requested from the app like a refund and confirmed by it."""

    __tablename__ = "payment_charges"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("status IN ('requested', 'captured', 'failed')", name="status_value"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    payment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    settled_at: Mapped[datetime | None]
    psp_reference: Mapped[str | None] = mapped_column(String(200))


class PaymentEvent(Base):
    """An event a payment app reported, kept once per (app, event id): a replay changes nothing."""

    __tablename__ = "payment_events"
    __table_args__ = (UniqueConstraint("app_id", "event_id", name="uq_payment_events_app_event"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("payment_apps.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    body_sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # What it did: "applied" or "ignored: <why>".
    outcome: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
