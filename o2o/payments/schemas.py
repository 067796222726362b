"""Request and response shapes of payments: apps, events in, an order's payment, the report."""

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from o2o.payments.models import PaymentMethod, PaymentStatus, RefundStatus
from o2o.webhooks.schemas import OutsideUrl

# Within what an order total can be (50 lines of 1,000 units at a pharmacy's prices).
MAX_AMOUNT_MINOR = 2**53


class PaymentAppIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    webhook_url: OutsideUrl = Field(
        description="Where the platform sends payment and refund requests (signed webhooks)."
    )


class PaymentAppOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    is_active: bool
    created_at: datetime
    previous_secret_until: datetime | None


class PaymentAppCreatedOut(BaseModel):
    id: int
    name: str
    secret: str = Field(description="The HMAC-SHA256 key; shown in this answer only.")
    previous_secret_until: datetime | None = None


class PaymentEventIn(BaseModel):
    """What a payment app reports; signed as the README's Payments section says."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")
    type: Literal[
        "captured", "failed", "refunded", "refund_failed", "charge_captured", "charge_failed"
    ]
    payment_id: uuid.UUID
    amount_minor: StrictInt = Field(ge=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    psp_reference: str | None = Field(None, max_length=200)
    # Which refund a refund event reports (the refund request carries it); without it, the
    # oldest open refund of the same amount.
    refund_id: uuid.UUID | None = None
    # Which further charge a charge event reports (`payment.charge_requested` carries it).
    charge_id: uuid.UUID | None = None


class PaymentEventOut(BaseModel):
    event_id: str
    applied: bool = Field(description="False for a replay or an event that changes nothing now.")
    outcome: str
    payment_id: uuid.UUID
    payment_status: PaymentStatus


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    amount_minor: int
    currency: str
    reason: str
    status: RefundStatus
    requested_at: datetime
    settled_at: datetime | None = None


class PaymentOut(BaseModel):
    id: uuid.UUID
    amount_minor: int
    currency: str
    due_at: datetime | None
    status: PaymentStatus
    method: PaymentMethod
    captured_minor: int
    captured_at: datetime | None


class ReportFigures(BaseModel):
    currency: str
    captured_minor: int = 0
    refunded_minor: int = 0
    compensation_minor: int = 0
    outstanding_minor: int = 0


class ReportDay(ReportFigures):
    date: date


class ReportStore(ReportFigures):
    store_id: int
    store_name: str


class ReportCommission(BaseModel):
    """What a pickup point's leader earned in the period (commission on completed orders)."""

    pickup_point_id: int
    pickup_point_name: str
    store_id: int
    leader_user_id: int | None
    currency: str
    orders: int
    goods_minor: int
    commission_minor: int


class PaymentsReportOut(BaseModel):
    from_: date = Field(alias="from")
    to: date
    days: list[ReportDay]
    stores: list[ReportStore]
    total: list[ReportFigures]
    pickup_point_commissions: list[ReportCommission] = []

    model_config = ConfigDict(populate_by_name=True)
