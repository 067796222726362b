"""The store's scheduled runs to community pickup points, and the parcels they carry.

A run is one departure of the store's courier to one point: its courier job (`Job.run_id`) sits on
the ordinary job board and carries every parcel booked on the run. A parcel is one order's way
to the point: booked on a run, in the run, at the point (held for its patient), then collected,
returned to the store after the hold, or cancelled with its order.
"""

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ENUM, UUID
from sqlalchemy.orm import Mapped, mapped_column

from o2o.db import Base


class RunStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # not left the store yet
    EN_ROUTE = "en_route"  # the courier picked the parcels up
    ARRIVED = "arrived"  # handed to the point's leader


class ParcelStatus(enum.StrEnum):
    BOOKED = "booked"  # waiting at the store for its run
    IN_RUN = "in_run"
    AT_POINT = "at_point"  # held at the point for its patient until hold_expires_at
    COLLECTED = "collected"
    RETURNED = "returned"  # not collected in the hold: goes back to the store
    CANCELLED = "cancelled"  # its order was cancelled


def _values(e: type[enum.Enum]) -> list[str]:
    return [m.value for m in e]


run_status_enum = ENUM(RunStatus, name="pickup_run_status", values_callable=_values)
parcel_status_enum = ENUM(ParcelStatus, name="pickup_parcel_status", values_callable=_values)


class PickupRun(Base):
    __tablename__ = "pickup_runs"
    __table_args__ = (
        # One run per point and departure: concurrent checkouts book the same row.
        UniqueConstraint("point_id", "departs_at", name="uq_pickup_runs_point_departs_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    point_id: Mapped[int] = mapped_column(ForeignKey("pickup_points.id", ondelete="RESTRICT"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"))
    departs_at: Mapped[datetime]
    # The run's SLA: every parcel on it is due at the point by then.
    arrives_at: Mapped[datetime]
    status: Mapped[RunStatus] = mapped_column(run_status_enum, server_default=text("'scheduled'"))
    # Shown to the point's leader; the courier enters it as proof of the drop at the point.
    handoff_code: Mapped[str] = mapped_column(String(12))
    arrived_at: Mapped[datetime | None]


class PickupParcel(Base):
    __tablename__ = "pickup_parcels"
    __table_args__ = (
        Index("ix_pickup_parcels_run_status", "run_id", "status"),
        Index("ix_pickup_parcels_point_status", "point_id", "status"),
        # The return sweep reads only parcels waiting at a point.
        Index(
            "ix_pickup_parcels_hold_expires_at",
            "hold_expires_at",
            postgresql_where=text("status = 'at_point'"),
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    point_id: Mapped[int] = mapped_column(ForeignKey("pickup_points.id", ondelete="RESTRICT"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pickup_runs.id", ondelete="RESTRICT"))
    status: Mapped[ParcelStatus] = mapped_column(parcel_status_enum)
    arrived_at: Mapped[datetime | None]
    hold_expires_at: Mapped[datetime | None]
    collected_at: Mapped[datetime | None]
    returned_at: Mapped[datetime | None]
