"""Request and response shapes of the pickup points API (README, Community pickup points)."""

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from o2o.db import INT4_MAX
from o2o.errors import rule_error
from o2o.geo import LatLon
from stores.schemas import Address, Name, OpeningHours

RunTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["10:00"])]


def _distinct(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise rule_error("invalid_run_times", "each run time is given once")
    return value


class PickupPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    address: Address
    location: LatLon
    # The point's own hours in the store's time zone; null = always open.
    opening_hours: OpeningHours = None
    # A user with the role leader (or a pharmacist of a partner shop); null = none yet.
    leader_user_id: Annotated[StrictInt, Field(ge=1, le=INT4_MAX)] | None = None
    # The leader's commission on an order's goods value, in basis points (1000 = 10%).
    commission_rate_bp: StrictInt = Field(ge=0, le=10_000, examples=[1000])
    # When the store's runs leave for the point, in the store's local time (default 10:00,
    # 15:00 and 19:00).
    run_times: Annotated[
        list[RunTime] | None, Field(min_length=1, max_length=24), AfterValidator(_distinct)
    ] = None


class StoreRef(BaseModel):
    id: int
    name: str


class RunOut(BaseModel):
    departs_at: datetime
    arrives_at: datetime


class PickupPointOut(BaseModel):
    id: int
    store: StoreRef
    name: str
    address: str
    location: LatLon
    timezone: str
    opening_hours: list[dict] | None
    leader_user_id: int | None = None
    commission_rate_bp: int | None = None
    run_times: list[str]
    run_travel_minutes: int
    # The run an order placed now would travel in.
    next_run: RunOut


class NearbyPickupPoint(BaseModel):
    pickup_point: PickupPointOut
    distance_m: float


class NearbyPickupPointsOut(BaseModel):
    items: list[NearbyPickupPoint]
    # The nearest `limit` points are one page: always null.
    next_cursor: str | None = None
