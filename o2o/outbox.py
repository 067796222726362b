"""Events that leave the system, written in the same transaction as the change they describe.

The relay (`o2o.webhooks.relay`) delivers them to webhook endpoints, each carrying its event id, so
a retried delivery is recognisably the same event.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column

from o2o.db import Base

# Events that carry a secret (a password reset token, for the e-mail/SMS gateway): the relay sends
# them only to endpoints that name the type exactly, never to a "*" or "user.*" subscription (an
# analytics sink, a payment app), so registering a wildcard endpoint does not hand out accounts.
EXACT_SUBSCRIPTION_ONLY = ("user.password_reset_requested",)


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # e.g. "order.status_changed", "order.sla_at_risk", "prescription.issued"
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    # what it is about, e.g. ("order", "<uuid>"); lets a receiver order events per aggregate
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


def emit(
    session: Session, event_type: str, aggregate_type: str, aggregate_id: Any, payload: dict
) -> OutboxEvent:
    """Record an event in the current transaction (it leaves only if the transaction commits)."""
    event = OutboxEvent(
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        payload=payload,
    )
    session.add(event)
    return event
