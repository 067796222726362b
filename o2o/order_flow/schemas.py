"""Request and response shapes of the orders API (API.md, Orders)."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from o2o.db import INT4_MAX
from o2o.errors import rule_error
from o2o.geo import LatLon
from o2o.i18n import gettext as _
from o2o.members.schemas import DeliveryWaiverOut
from o2o.orders.models import Fulfillment, OrderStatus
from o2o.payments.schemas import PaymentOut, RefundOut
from prescriptions.schemas import SafetyOut

# A cart bigger than this is not a pharmacy order; refusing it keeps one request from locking
# half the store's lots.
MAX_LINES = 50
MAX_QUANTITY = 1000


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=INT4_MAX)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)
    substitution: Literal["allowed", "not_allowed"] | None = Field(
        None,
        description="May an equivalent fill this line (at checkout, or by the pharmacist without "
        "asking again)? Default: allowed for over-the-counter products, not_allowed for "
        "prescription ones, whose equivalent also needs the prescription to allow it",
    )


class DeliveryAddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: LatLon
    text: str = Field(min_length=1, max_length=500)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError(_("the address text must not be blank"))
        return value


class DeliverySlotIn(BaseModel):
    """A scheduled delivery window, as listed by GET /stores/{id}/delivery-slots."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> "DeliverySlotIn":
        if self.end <= self.start:
            raise rule_error("invalid_delivery_slot", _("a delivery slot ends after it starts"))
        return self


class DeliverySlotOut(BaseModel):
    start: datetime
    end: datetime


class OrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # The schema states the rules _delivery_needs_address enforces.
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"fulfillment": {"const": "delivery"}},
                        "required": ["fulfillment"],
                    },
                    "then": {
                        "properties": {"delivery_address": {"type": "object"}},
                        "required": ["delivery_address"],
                    },
                },
                {
                    "if": {
                        "properties": {"payment_method": {"const": "at_store"}},
                        "required": ["payment_method"],
                    },
                    "then": {
                        "properties": {"fulfillment": {"const": "pickup"}},
                        "required": ["fulfillment"],
                    },
                },
            ]
        },
    )

    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_LINES)
    location: LatLon
    fulfillment: Literal["auto", "pickup", "delivery", "pickup_point"] = "auto"
    delivery_address: DeliveryAddressIn | None = None
    store_id: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)] | None = None
    # "at_store": a pickup paid at the counter (released at once); "online": through the payment
    # app, before the payment deadline.
    payment_method: Literal["online", "at_store"] = "online"
    # A scheduled delivery instead of one within the SLA from now (needs delivery_address).
    delivery_slot: DeliverySlotIn | None = None
    # When no single store holds the cart, place it in parts at the fewest nearby stores
    # (o2o/order_flow/split_checkout.py): online payment, no store_id, no delivery_slot.
    allow_split: bool = False
    # Fulfillment "pickup_point": the community pickup point the store's run takes it to.
    pickup_point_id: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)] | None = None

    @model_validator(mode="after")
    def _pickup_point_needs_its_id(self) -> "OrderIn":
        if (self.fulfillment == "pickup_point") != (self.pickup_point_id is not None):
            raise rule_error(
                "invalid_pickup_point",
                'fulfillment "pickup_point" goes with a pickup_point_id, and only it',
            )
        if self.fulfillment == "pickup_point" and (
            self.delivery_slot is not None or self.store_id is not None
        ):
            raise rule_error(
                "invalid_pickup_point",
                "a pickup-point order travels in its point's run, from its point's store: "
                "give no delivery_slot and no store_id",
            )
        return self

    @model_validator(mode="after")
    def _delivery_needs_address(self) -> "OrderIn":
        if self.fulfillment == "delivery" and self.delivery_address is None:
            raise ValueError(_("a delivery order needs a delivery_address"))
        if self.payment_method == "at_store" and self.fulfillment != "pickup":
            raise ValueError(_('payment at the store needs fulfillment "pickup"'))
        if self.delivery_slot is not None and (
            self.fulfillment == "pickup" or self.delivery_address is None
        ):
            raise rule_error(
                "invalid_delivery_slot",
                _("a delivery_slot is for a delivery: give a delivery_address, not pickup"),
            )
        return self

    def merged_items(self) -> list[tuple[int, int]]:
        """Return (product_id, quantity) with repeated products added up, in product order."""
        totals: dict[int, int] = {}
        for item in self.items:
            totals[item.product_id] = totals.get(item.product_id, 0) + item.quantity
        return sorted(totals.items())

    def substitution_wishes(self) -> dict[int, str | None]:
        """Return each product's stated substitution wish; "not_allowed" on any line wins."""
        wishes: dict[int, str | None] = {}
        for item in self.items:
            if wishes.get(item.product_id) != "not_allowed":
                wishes[item.product_id] = item.substitution or wishes.get(item.product_id)
        return wishes


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class HandoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # For a pay-at-store order: the pharmacist confirms the money was taken at the counter.
    payment_collected: bool = False

    pickup_code: str = Field(
        pattern=r"^([0-9]{6}|O2O-PICKUP:[0-9a-fA-F-]{36}:[0-9]{6})$",
        description="The 6-digit code the patient shows, or the scanned `pickup_qr` payload.",
    )


class StoreRef(BaseModel):
    id: int
    name: str


class OrderLineOut(BaseModel):
    product_id: int = Field(description="The product given (its lots are held and handed over)")
    quantity: int
    price_minor: int = Field(description="The unit price actually charged")
    requested_product_id: int | None = Field(
        None, description="The product asked for, when an equivalent fills the line"
    )
    substitution: Literal["allowed", "not_allowed"] = "not_allowed"
    substitution_reason: Literal["out_of_stock", "formulary", "patient_request"] | None = None


class SubstitutionIn(BaseModel):
    """A pharmacist's substitution on a line: the line's product, the equivalent, the reason."""

    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=INT4_MAX, description="The line's product now")
    to_product_id: StrictInt = Field(ge=1, le=INT4_MAX, description="The equivalent to give")
    reason: Literal["out_of_stock", "formulary", "patient_request"]


class SubstitutionOut(BaseModel):
    id: uuid.UUID
    from_product_id: int
    to_product_id: int
    from_quantity: int
    to_quantity: int
    from_price_minor: int
    to_price_minor: int
    difference_minor: int = Field(description="Charged (positive) or refunded (negative)")
    reason: str
    consent: Literal["up_front", "asked"]
    status: Literal["pending", "accepted", "declined", "withdrawn"]
    requested_at: datetime
    decided_at: datetime | None


class TimelineEntry(BaseModel):
    status: OrderStatus
    at: datetime
    reason: str | None


class OrderOut(BaseModel):
    id: uuid.UUID
    status: OrderStatus
    fulfillment: Fulfillment
    store: StoreRef
    routing_reason: str
    lines: list[OrderLineOut]
    subtotal_minor: int
    delivery_fee_minor: int
    # The delivery fee the patient's member level waived (the fee above is then 0), and why.
    delivery_fee_waiver: DeliveryWaiverOut | None = None
    compensation_minor: int
    total_minor: int
    currency: str
    delivery_address: DeliveryAddressIn | None
    created_at: datetime
    released_at: datetime | None
    ready_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    sla_deadline: datetime | None
    # When the store is advised to start on a delivery (set at release): in time for a slot's
    # start, or (just-in-time preparation) when the fleet's queue means no courier would come
    # sooner.
    prepare_from: datetime | None = None
    # The scheduled delivery window the patient chose (the SLA deadline is its end).
    delivery_slot: DeliverySlotOut | None = None
    # When held stock is given back if nothing happens (prescription wait, pickup window).
    hold_expires_at: datetime | None
    # A store count took stock this paid order held: the store moves it to another lot
    # (`POST /orders/{id}/reallocate`) or cancels it with a refund.
    stock_short_at: datetime | None = None
    prescription_id: uuid.UUID | None
    # Only to the order's patient; null for everyone else.
    pickup_code: str | None
    # The pickup code as a QR payload for the counter's scanner (pickup orders only).
    pickup_qr: str | None = None
    delivery_code: str | None
    # Fulfillment "pickup_point": where the patient collects it (the deadline is its run's arrival).
    pickup_point_id: int | None = None
    timeline: list[TimelineEntry]
    # Null for orders placed before payments existed.
    payment: PaymentOut | None = None
    refunds: list[RefundOut] = []
    # For the store's staff reading one order (GET /orders/{id}): the patient's coded allergies
    # and the allergy and interaction warnings; null elsewhere.
    safety: SafetyOut | None = None
    # A pharmacist's substitutions, and what each asks of the patient (`status: pending`).
    substitutions: list[SubstitutionOut] = []
    # A part of a split order (GET /split-orders/{id}); its payment is the whole order's.
    split_order_id: uuid.UUID | None = None


class SubstitutionResultOut(BaseModel):
    substitution: SubstitutionOut
    order: OrderOut
    # The allergy and interaction warnings with the equivalent in the order.
    safety: SafetyOut


class SplitOrderOut(BaseModel):
    """One order filled in parts by several stores and paid once (`allow_split`)."""

    id: uuid.UUID
    status: OrderStatus = Field(
        description="Derived from the parts: cancelled when all are, completed when every part "
        "not cancelled is, else the status of the least advanced open part"
    )
    parts: list[OrderOut] = Field(
        description="Each part is an order of its own (store, fulfillment, codes, SLA), nearest "
        "store first; cancel or follow it at /orders/{id}"
    )
    subtotal_minor: int
    delivery_fee_minor: int
    total_minor: int
    currency: str
    created_at: datetime
    payment: PaymentOut | None
    refunds: list[RefundOut] = []


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None
