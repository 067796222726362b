"""Couriers, delivery jobs, SLA escalations and breaches."""

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
from sqlalchemy.dialects.postgresql import ENUM, UUID
from sqlalchemy.orm import Mapped, mapped_column

from o2o.db import Base
from o2o.orders.models import Order


class JobStatus(enum.StrEnum):
    OPEN = "open"  # in the pool
    CLAIMED = "claimed"  # a courier is on the way to the store
    PICKED_UP = "picked_up"  # out for delivery
    LOCKED = "locked"  # too many wrong delivery codes: the store takes over
    DELIVERED = "delivered"
    FAILED = "failed"  # handed back to the store with a reason
    CANCELLED = "cancelled"  # the order was cancelled


# A job in one of these states belongs to the order's current delivery attempt.
LIVE_JOB_STATES = (JobStatus.OPEN, JobStatus.CLAIMED, JobStatus.PICKED_UP, JobStatus.LOCKED)
# Jobs that count towards a courier's limit.
ACTIVE_JOB_STATES = (JobStatus.CLAIMED, JobStatus.PICKED_UP)
# Jobs a courier holds: the active ones, and those locked after too many wrong delivery codes.
HELD_JOB_STATES = (JobStatus.CLAIMED, JobStatus.PICKED_UP, JobStatus.LOCKED)


def _values(e: type[enum.Enum]) -> list[str]:
    return [m.value for m in e]


def _in(states) -> str:
    return "status IN (" + ", ".join(f"'{s.value}'" for s in states) + ")"


# A job its courier holds, as SQL on dispatch_jobs (the predicate of its partial index).
ACTIVE_JOB_SQL = _in(ACTIVE_JOB_STATES)


job_status_enum = ENUM(JobStatus, name="job_status", values_callable=_values)


# Whether courier c may serve store s: it is their home store or lies in their service area.
# The area is GeoJSON, whose edges are straight lines in lon/lat (RFC 7946, 3.1.1), so the test is
# planar, as a delivery zone's is (`stores.search`): a great-circle edge would bow up to a metre
# from the line drawn, and the planar test, on one courier's area prepared once per statement,
# takes a fraction of the geodetic one's time. Every rule on who may serve a store uses this.
# A delivery job may be taken while its order is ready, or already while the store prepares it
# (the job opens a few minutes before the order is due ready): an order row `o`.
TAKEABLE_ORDER_SQL = "o.status IN ('ready', 'preparing')"
# Whether job j's order may be taken (false when it has none), read by the order's key for each
# job a walk reads. Written as a scalar subquery, not EXISTS: PostgreSQL may turn an EXISTS into
# one pass that hashes every takeable order of the city, which it then does for each claim (a
# cost that grows with the city's ready orders, not with the few jobs a claim reads).
JOB_ORDER_TAKEABLE_SQL = (
    f"coalesce((SELECT {TAKEABLE_ORDER_SQL} FROM orders o WHERE o.id = j.order_id), false)"
)

SERVES_STORE_SQL = (
    "(c.home_store_id = s.id OR ST_Covers(c.service_area::geometry, s.location::geometry))"
)


class Courier(Base):
    """A courier's working profile: home store or service area, and last known location."""

    __tablename__ = "couriers"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    home_store_id: Mapped[int | None] = mapped_column(
        ForeignKey("stores.id", ondelete="SET NULL"), index=True
    )
    service_area = mapped_column(Geography("MULTIPOLYGON", srid=4326, spatial_index=False))
    location = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    location_at: Mapped[datetime | None]
    # When the courier's shift ends, as their app says (the promise stops counting on them
    # shortly before); null: no end given.
    shift_ends_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Job(Base):
    """One delivery attempt of an order: open in the pool, claimed, picked up, then closed."""

    __tablename__ = "dispatch_jobs"
    __table_args__ = (
        # One live job per order: a second open would let two couriers carry one parcel.
        Index(
            "uq_dispatch_jobs_live_order",
            "order_id",
            unique=True,
            postgresql_where=text(_in(LIVE_JOB_STATES)),
        ),
        Index(
            "ix_dispatch_jobs_courier_active",
            "courier_id",
            postgresql_where=text(ACTIVE_JOB_SQL),
        ),
        # The stale-claim sweep.
        Index(
            "ix_dispatch_jobs_pickup_due_at",
            "pickup_due_at",
            postgresql_where=text("status = 'claimed'"),
        ),
        CheckConstraint("priority BETWEEN 0 AND 10", name="priority_range"),
        CheckConstraint("code_failures >= 0", name="code_failures_nonnegative"),
        CheckConstraint("status <> 'open' OR courier_id IS NULL", name="open_has_no_courier"),
        CheckConstraint(
            "status NOT IN ('claimed', 'picked_up') OR courier_id IS NOT NULL",
            name="taken_has_courier",
        ),
        CheckConstraint(
            "status <> 'claimed' OR pickup_due_at IS NOT NULL", name="claimed_has_pickup_due"
        ),
        # A job carries one order's delivery, or a run's parcels to a pickup point.
        CheckConstraint("(order_id IS NULL) <> (run_id IS NULL)", name="order_or_run"),
        # One live job per run: the run is claimed by one courier.
        Index(
            "uq_dispatch_jobs_live_run",
            "run_id",
            unique=True,
            postgresql_where=text(_in(LIVE_JOB_STATES)),
        ),
    )

    # Not guessable, like order ids: a courier's app shares them.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    # A scheduled run to a pickup point (then order_id is null): the parcels are the run's.
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pickup_runs.id", ondelete="CASCADE")
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"))
    dropoff = mapped_column(Geography("POINT", srid=4326, spatial_index=False), nullable=False)
    deadline: Mapped[datetime]
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    status: Mapped[JobStatus] = mapped_column(job_status_enum)
    # 1 for the first job of an order, +1 after each failed delivery.
    attempt: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    courier_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    opened_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    # A claim not picked up by then goes back to the pool (`actions.return_stale_claims`): set at
    # the claim from the courier's ride to the store (`pool.pickup_due`).
    pickup_due_at: Mapped[datetime | None]
    picked_up_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    code_failures: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    fail_reason: Mapped[str | None] = mapped_column(Text)
    # A batched trip: the jobs one courier claimed together at one store, the drop order within
    # it (1 = first door) and the door time promised to the courier's app at the claim.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    drop_seq: Mapped[int | None] = mapped_column(SmallInteger)
    drop_eta: Mapped[datetime | None]


# The pool: claims and listings start from the stores near the courier (GiST on stores) and read
# each store's open jobs in rank order (most urgent first, then by deadline), stopping at the
# first few visible ones instead of ranking every open job.
Index(
    "ix_dispatch_jobs_open_rank",
    Job.__table__.c.store_id,
    Job.__table__.c.priority.desc(),
    Job.__table__.c.deadline,
    Job.__table__.c.id,
    postgresql_where=text("status = 'open'"),
)


class SlaEscalation(Base):
    """An order flagged at risk: recorded once, so the store is told once."""

    __tablename__ = "sla_escalations"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    deadline: Mapped[datetime]
    predicted_finish: Mapped[datetime]
    escalated_at: Mapped[datetime]


class SlaBreach(Base):
    """A delivery that missed its deadline: recorded once, compensated once."""

    __tablename__ = "sla_breaches"
    __table_args__ = (
        UniqueConstraint("order_id", name="uq_sla_breaches_order_id"),
        Index("ix_sla_breaches_store_deadline", "store_id", "deadline"),
        CheckConstraint("compensation_minor >= 0", name="compensation_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    deadline: Mapped[datetime]
    detected_at: Mapped[datetime]
    # A stable word: not_prepared, no_courier, not_collected, in_transit (by the phase the
    # delivery was in when its deadline passed) or delivered_late (dispatch.sla.LATE_DELIVERY).
    reason: Mapped[str] = mapped_column(String(32))
    compensation_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))


# The SLA monitor reads only open deliveries; without this index it would scan every order ever
# placed each minute. Declared here (on the orders table) because the monitor is its only reader.
Index(
    "ix_orders_open_delivery_deadline",
    Order.__table__.c.sla_deadline,
    postgresql_where=text(
        "fulfillment = 'delivery' AND status IN ('released', 'preparing', 'ready', "
        "'out_for_delivery')"
    ),
)
