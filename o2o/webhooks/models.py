"""Webhook endpoints, the deliveries of outbox events to them, and the relay's fan-out mark."""

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, ENUM
from sqlalchemy.orm import Mapped, mapped_column, relationship

from o2o.db import Base
from o2o.outbox import OutboxEvent


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


delivery_status_enum = ENUM(
    DeliveryStatus,
    name="outbox_delivery_status",
    values_callable=lambda e: [m.value for m in e],
)


class WebhookEndpoint(Base):
    """Where events are sent: a URL, the secret that signs them, and the event types wanted."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("cardinality(event_types) > 0", name="event_types_not_empty"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Kept readable: each request is signed with it (HMAC), so it cannot be stored hashed.
    secret: Mapped[str] = mapped_column(String(128))
    # Exact types ("order.sla_breached"), a family ("order.*"), or everything ("*").
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OutboxDelivery(Base):
    """One event for one endpoint: sent until it is acknowledged, or given up after retries."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_outbox_deliveries_event_endpoint"),
        Index(
            "ix_outbox_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"))
    # Set with the event in one flush: the event's row is written first.
    event: Mapped[OutboxEvent] = relationship()
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        delivery_status_enum, server_default=DeliveryStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    # Due time for a pending delivery; while a relay sends it, the end of that relay's lease.
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OutboxRelayState(Base):
    """How far the relay has fanned events out to endpoints (a single row)."""

    __tablename__ = "outbox_relay_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    fanned_out_until: Mapped[datetime | None]
