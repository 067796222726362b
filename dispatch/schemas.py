import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from o2o.geo import LatLon


class Point(BaseModel):
    lat: float
    lon: float


class StoreRef(BaseModel):
    id: int
    name: str
    location: Point


class JobOut(BaseModel):
    """A job as a courier sees it (listed, claimed, or held)."""

    id: uuid.UUID
    # Null for a run to a pickup point (then `run_id` says which run; its parcels are the run's).
    order_id: uuid.UUID | None
    store: StoreRef
    # Exact only for the job's own courier (from the claim on), the store's staff and admins;
    # anyone else, the board above all, sees the centre of its grid cell (~200 m).
    dropoff: Point = Field(
        description="The drop-off: exact for the job's courier, else its ~200 m grid cell's centre"
    )
    dropoff_exact: bool = Field(description="False while the drop-off is shown approximately")
    deadline: datetime
    priority: int
    # From the point the courier sent to the store; null when no point was given.
    distance_m: float | None
    status: str
    parcel_ready: bool = Field(
        True,
        description="False while the store still prepares the parcel: a job opens a few minutes "
        "before its order is due ready (`O2O_DISPATCH_OPEN_BEFORE_READY_MINUTES`), so its courier "
        "rides to the store meanwhile; the pickup waits for it (409 parcel_not_ready)",
    )
    attempt: int
    claimed_at: datetime | None = None
    pickup_due_at: datetime | None = Field(
        None,
        description="While claimed: the claim goes back to the pool unless the parcel is picked up "
        "by then (`O2O_DISPATCH_CLAIM_TIMEOUT_MINUTES` after the claim, or for a courier riding "
        "from further off, their ride to the store and half that more)",
    )
    picked_up_at: datetime | None = None
    # A batched trip: the trip's id, this drop's place in it (1 = first door) and its door time
    # predicted at the claim; null for a job taken on its own.
    batch_id: uuid.UUID | None = None
    drop_seq: int | None = None
    drop_eta: datetime | None = None
    run_id: uuid.UUID | None = None


class HeldJobOut(JobOut):
    """A job the caller holds: with what the courier needs at the door."""

    # Null unless the caller sees the exact drop-off (see `dropoff_exact`).
    address_text: str | None = None
    code_attempts_left: int


class TripOut(BaseModel):
    """A batched trip: the jobs claimed together at one store, in drop order, each with its ETA.

    Each drop is worked on its own (pickup, delivery code or failure, release before pickup)."""

    batch_id: uuid.UUID | None
    store: StoreRef
    drops: list[HeldJobOut]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class ClaimIn(LatLon):
    pass


class DeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_code: str = Field(min_length=1, max_length=32)


class FailIn(BaseModel):
    # Python's regex engine: its \s is exactly what str.strip() removes below.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    # The pattern says in the schema what the check below enforces: 3+ characters once stripped.
    reason: str = Field(min_length=3, max_length=500, pattern=r"^\s*\S[\s\S]+\S\s*$")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if len(value) < 3:
            raise ValueError("Say why the delivery failed (at least 3 characters).")
        return value


class CourierLocationOut(BaseModel):
    lat: float
    lon: float
    at: datetime


class ShiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ends_at: AwareDatetime | None = Field(
        description="When the courier's shift ends (null: no end given)"
    )


class ShiftOut(BaseModel):
    ends_at: datetime | None


class CourierProfileIn(BaseModel):
    """Where a courier works: a home store, a service area (GeoJSON), or both."""

    model_config = ConfigDict(extra="forbid")

    home_store_id: Annotated[StrictInt, Field(ge=1)] | None = None
    service_area: dict[str, Any] | None = None


class CourierProfileOut(BaseModel):
    user_id: int
    home_store_id: int | None
    service_area: dict[str, Any] | None
    location: Point | None
    location_at: datetime | None
    active_jobs: int


class BreachOut(BaseModel):
    order_id: uuid.UUID
    deadline: datetime
    delivered_at: datetime | None
    reason: str
    compensation_minor: int


class SlaReportOut(BaseModel):
    store_id: int
    # The period, half-open: [from, to).
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    delivered: int
    on_time: int
    on_time_rate: float | None
    p50_minutes: float | None
    p95_minutes: float | None
    # The breaches whose deadline falls in the period (the first 1000 listed; all counted).
    breaches: list[BreachOut]
    breach_count: int
    compensation_minor: int
    currency: str
