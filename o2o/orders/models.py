"""Orders, their lines and lot allocations, and the status timeline."""

import enum
import uuid
from datetime import datetime

from geoalchemy2 import Geography
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
from sqlalchemy.dialects.postgresql import ENUM, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from o2o.db import Base


class OrderStatus(enum.StrEnum):
    # Stock reserved until the payment deadline; the payment app's capture moves the order on.
    AWAITING_PAYMENT = "awaiting_payment"
    AWAITING_PRESCRIPTION = "awaiting_prescription"
    RELEASED = "released"
    PREPARING = "preparing"
    READY = "ready"
    OUT_FOR_DELIVERY = "out_for_delivery"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Fulfillment(enum.StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"
    # Carried in the store's scheduled run to a community pickup point; collected there.
    PICKUP_POINT = "pickup_point"


def _values(e: type[enum.Enum]) -> list[str]:
    return [m.value for m in e]


status_enum = ENUM(OrderStatus, name="order_status", values_callable=_values)
fulfillment_enum = ENUM(Fulfillment, name="fulfillment", values_callable=_values)


class SplitOrder(Base):
    """One order the patient placed and paid once, filled in parts by several stores: each part
    is an `Order` of its own (store, routing, codes, job, SLA), the payment is the first part's
    for the whole amount (`o2o.payments.service`), and the status is derived from the parts."""

    __tablename__ = "split_orders"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    parts: Mapped[list["Order"]] = relationship(
        lazy="selectin", order_by="Order.split_position", viewonly=True
    )


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("subtotal_minor >= 0", name="subtotal_nonnegative"),
        CheckConstraint("delivery_fee_minor >= 0", name="delivery_fee_nonnegative"),
        CheckConstraint(
            "compensation_minor >= 0 AND compensation_minor <= subtotal_minor + delivery_fee_minor",
            name="compensation_range",
        ),
        CheckConstraint(
            "fulfillment = 'pickup' OR delivery_location IS NOT NULL", name="delivery_has_address"
        ),
        Index("ix_orders_patient_created", "patient_id", "created_at"),
        CheckConstraint(
            "(split_order_id IS NULL) = (split_position IS NULL)", name="split_part_positioned"
        ),
        UniqueConstraint("split_order_id", "split_position", name="uq_orders_split_part"),
        Index("ix_orders_store_status", "store_id", "status"),
        # The expiry sweep reads only orders that hold stock and have a deadline.
        Index(
            "ix_orders_hold_expires_at",
            "hold_expires_at",
            postgresql_where=text("hold_expires_at IS NOT NULL"),
        ),
        # The fleet's arrival count (dispatch.fleet): deliveries released in the last half hour.
        Index(
            "ix_orders_delivery_released_at",
            "released_at",
            postgresql_where=text("fulfillment = 'delivery' AND released_at IS NOT NULL"),
        ),
    )

    # Not guessable: ids appear in URLs the apps share.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"))
    status: Mapped[OrderStatus] = mapped_column(status_enum)
    fulfillment: Mapped[Fulfillment] = mapped_column(fulfillment_enum)
    requested_fulfillment: Mapped[str] = mapped_column(String(16))
    routing_reason: Mapped[str] = mapped_column(Text)

    patient_location = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    delivery_location = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    delivery_address_text: Mapped[str | None] = mapped_column(String(500))

    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int]
    delivery_fee_minor: Mapped[int] = mapped_column(server_default=text("0"))
    compensation_minor: Mapped[int] = mapped_column(server_default=text("0"))

    # Shown to the order's patient only; compared in constant time.
    pickup_code: Mapped[str] = mapped_column(String(12))
    delivery_code: Mapped[str] = mapped_column(String(12))
    pickup_code_failures: Mapped[int] = mapped_column(server_default=text("0"))

    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    released_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # Delivery SLA: released_at + the SLA minutes (set at release).
    sla_deadline: Mapped[datetime | None]
    # Just-in-time preparation of a delivery (set at release): the store is advised to start on
    # it from here, when the fleet's queue means a courier would not come for it sooner.
    prepare_from: Mapped[datetime | None]
    # A scheduled delivery: the window the patient chose (the SLA deadline is its end).
    delivery_slot_start: Mapped[datetime | None]
    delivery_slot_end: Mapped[datetime | None]
    # A pickup-point order: the point it travels to (its delivery_location is the point's).
    pickup_point_id: Mapped[int | None] = mapped_column(
        ForeignKey("pickup_points.id", ondelete="RESTRICT"), index=True
    )
    # When held stock is given back if nothing happens (unpaid by the payment deadline, Rx not
    # approved, pickup not collected).
    hold_expires_at: Mapped[datetime | None]
    # Set when a point-of-sale count took stock this paid order held: the pharmacist moves it to
    # another lot or cancels it (refunded).
    stock_short_at: Mapped[datetime | None]
    # A part of a split order, and its place in it (0 = the nearest store, which holds the
    # payment); both null for an order filled by one store.
    split_order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("split_orders.id", ondelete="RESTRICT"), index=True
    )
    split_position: Mapped[int | None] = mapped_column(SmallInteger)

    lines: Mapped[list["OrderLine"]] = relationship(
        back_populates="order", lazy="selectin", order_by="OrderLine.id"
    )
    events: Mapped[list["OrderEvent"]] = relationship(
        lazy="selectin", order_by="OrderEvent.id", viewonly=True
    )

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.delivery_fee_minor - self.compensation_minor

    @property
    def is_rx(self) -> bool:
        return any(line.rx_only for line in self.lines)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        UniqueConstraint("order_id", "product_id", name="uq_order_lines_order_product"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price_minor >= 0", name="price_nonnegative"),
        CheckConstraint("substitution IN ('allowed', 'not_allowed')", name="substitution_value"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    # The product given (its lots are allocated, it is charged and handed over).
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    quantity: Mapped[int]
    # Unit price at the time of the order (weighted over the lots allocated), minor units.
    price_minor: Mapped[int]
    rx_only: Mapped[bool]
    # The product the patient asked for, when an equivalent fills the line (else null).
    requested_product_id: Mapped[int | None] = mapped_column(
        ForeignKey("products.id", ondelete="RESTRICT")
    )
    # The patient's word on equivalents for this line: "allowed" is consent up front.
    substitution: Mapped[str] = mapped_column(String(16), server_default="not_allowed")
    # Why an equivalent fills the line: out_of_stock, formulary, patient_request.
    substitution_reason: Mapped[str | None] = mapped_column(String(32))

    order: Mapped[Order] = relationship(back_populates="lines")
    allocations: Mapped[list["LotAllocation"]] = relationship(
        lazy="selectin", order_by="LotAllocation.lot_id"
    )


class LotAllocation(Base):
    """Units of one order line reserved from one lot (FEFO)."""

    __tablename__ = "lot_allocations"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    order_line_id: Mapped[int] = mapped_column(
        ForeignKey("order_lines.id", ondelete="CASCADE"), primary_key=True
    )
    lot_id: Mapped[int] = mapped_column(
        ForeignKey("lots.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    quantity: Mapped[int]


class OrderEvent(Base):
    """One status change of an order: the timeline shown to the patient and the store."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[OrderStatus | None] = mapped_column(status_enum)
    to_status: Mapped[OrderStatus] = mapped_column(status_enum)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)


class OrderSubstitution(Base):
    """A pharmacist's substitution on a line of a released order, and the patient's answer.

    `held` is the stock reserved for the equivalent while the patient has not answered
    ([[lot_id, quantity], ...]); the line keeps its own lots until the substitution is accepted.
    """

    __tablename__ = "order_substitutions"
    __table_args__ = (
        CheckConstraint(
            "reason IN ('out_of_stock', 'formulary', 'patient_request')", name="reason_code"
        ),
        CheckConstraint(
            "status IN ('pending', 'accepted', 'declined', 'withdrawn')", name="status_value"
        ),
        CheckConstraint("from_quantity > 0 AND to_quantity > 0", name="quantities_positive"),
        Index("ix_order_substitutions_order_id", "order_id"),
        # One open question to the patient per line at a time.
        Index(
            "uq_order_substitutions_pending_line",
            "order_line_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    order_line_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("order_lines.id", ondelete="CASCADE")
    )
    from_product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    to_product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    from_quantity: Mapped[int]
    to_quantity: Mapped[int]
    # Unit prices (minor units) and what the patient pays more (positive) or gets back.
    from_price_minor: Mapped[int]
    to_price_minor: Mapped[int]
    difference_minor: Mapped[int]
    reason: Mapped[str] = mapped_column(String(32))
    # "up_front" (the line allowed equivalents) or "asked" (the patient answers in the app).
    consent: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    held: Mapped[list | None] = mapped_column(JSONB)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    requested_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
