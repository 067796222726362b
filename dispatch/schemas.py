import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
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
    order_id: uuid.UUID
    store: StoreRef
    dropoff: Point
    deadline: datetime
    priority: int
    # From the point the courier sent to the store; null when no point was given.
    distance_m: float | None
    status: str
    attempt: int
    claimed_at: datetime | None = None
    picked_up_at: datetime | None = None


class HeldJobOut(JobOut):
    """A job the caller holds: with what the courier needs at the door."""

    address_text: str | None = None
    code_attempts_left: int


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class ClaimIn(LatLon):
    pass


class DeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_code: str = Field(min_length=1, max_length=32)


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500)

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


EVENT_TYPE = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")
EventType = Annotated[str, StringConstraints(max_length=64, pattern=EVENT_TYPE.pattern)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    event_types: list[EventType] = Field(min_length=1, max_length=50)
    # Leave out to have one generated (returned once, in the 201 response).
    secret: str | None = Field(None, min_length=24, max_length=128)
    description: str | None = Field(None, max_length=200)

    @field_validator("url")
    @classmethod
    def _url_length(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2000:
            raise ValueError("The URL is longer than 2000 characters.")
        return value

    @field_validator("event_types")
    @classmethod
    def _event_types(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) > 64 or not EVENT_TYPE.match(item):
                raise ValueError(
                    f"{item!r} is not an event type: use e.g. 'order.sla_breached', 'order.*' "
                    "or '*'."
                )
        return sorted(set(value))


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    event_types: list[str]
    description: str | None
    is_active: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str
