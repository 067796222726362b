"""Request and response shapes of store search and the nearby list (API.md, Search)."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from o2o.api import CURSOR_DESCRIPTION, CURSOR_PATTERN, MAX_CURSOR_LENGTH
from o2o.config import get_settings
from o2o.db import INT4_MAX
from o2o.geo import LatLon
from stores.cart import MAX_LINES, MAX_QUANTITY
from stores.proximity import MAX_LIMIT, MIN_RADIUS_M
from stores.schemas import PAGE_DEFAULT, OpeningHoursEntry, Service


class CartLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=INT4_MAX)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)
    substitution: Literal["allowed", "not_allowed"] | None = Field(
        None,
        description="May an equivalent (same generic, strength, form, route) cover this line? "
        "Default: allowed for over-the-counter products, not for prescription ones",
    )


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: LatLon = Field(description="Where the patient is; distances are measured from here")
    items: list[CartLineIn] = Field(min_length=1, max_length=MAX_LINES)
    fulfillment: Literal["pickup", "delivery", "any"] = "any"
    limit: StrictInt = Field(5, ge=1, le=MAX_LIMIT)
    radius_m: StrictFloat | None = Field(
        None,
        ge=MIN_RADIUS_M,
        le=get_settings().search_max_radius_m,
        allow_inf_nan=False,
        description="Metres, at most the configured maximum (50 km)",
    )
    delivery_location: LatLon | None = Field(
        None, description="Deliver here instead of `location` (zone and ETA are judged here)"
    )
    allow_split: bool = Field(
        False,
        description="When no store in the radius holds the whole cart, also answer with "
        "`split_plan`: the fewest stores (at most 3) that hold it together",
    )


class StoreBriefOut(BaseModel):
    id: int
    name: str
    location: LatLon


class MissingOut(BaseModel):
    product_id: int
    quantity_missing: int


class SubstituteOut(BaseModel):
    for_product_id: int = Field(description="The product asked for")
    product_id: int = Field(description="The equivalent this store would give instead")
    quantity: int = Field(description="Packs of the equivalent (the same number of units)")


class SearchResultOut(BaseModel):
    store: StoreBriefOut
    distance_m: float = Field(description="Metres on the spheroid from `location`")
    complete: bool = Field(description="Holds every item in the quantity asked")
    missing: list[MissingOut]
    can_deliver: bool = Field(description="Offers delivery and the address is inside its zone")
    eta_minutes: int = Field(
        description="Minutes to the door when the store delivers to you (unless you asked for "
        "pickup), else minutes until a pickup is ready; a delivery's includes the wait for a "
        "courier around the store (`courier_wait_minutes`)"
    )
    courier_wait_minutes: int = Field(
        0,
        description="Minutes a ready order is expected to wait for a courier around this store, "
        "from the open jobs around it and the couriers near it who may take its jobs, and no "
        "less than its own jobs are waiting now (0 when unknown or not delivering)",
    )
    is_open: bool
    opens_at: datetime | None = Field(description="When a closed store opens next (UTC)")
    offers_pickup: bool
    offers_delivery: bool
    delivery_fee_minor: int
    currency: str
    substitutes: list[SubstituteOut] = Field(
        default_factory=list,
        description="Equivalents counted as covering lines this store lacks (complete thanks "
        "to them); empty when it holds every asked product",
    )


class SplitItemOut(BaseModel):
    product_id: int
    quantity: int


class SplitPartOut(BaseModel):
    store: StoreBriefOut
    items: list[SplitItemOut]
    distance_m: float = Field(description="Metres on the spheroid from `location`")
    can_deliver: bool
    eta_minutes: int


class SplitPlanOut(BaseModel):
    """The fewest stores (at most 3) that hold the cart together; among plans with as few
    stores, the smallest total distance from `location` (then the smaller farthest store, then
    the lower store ids). Parts are nearest first."""

    parts: list[SplitPartOut]
    store_count: int


class SearchOut(BaseModel):
    results: list[SearchResultOut]
    split_plan: SplitPlanOut | None = Field(
        None,
        description="Only with `allow_split` and no complete store in the radius; null when a "
        "store holds the whole cart or no 3 stores hold it together",
    )


class NearbyStoreOut(BaseModel):
    """What anyone may see of a store near them."""

    id: int
    name: str
    address: str
    location: LatLon
    timezone: str
    opening_hours: list[OpeningHoursEntry] | None
    services: list[Service]
    prep_minutes: int
    delivery_fee_minor: int
    currency: str
    is_open_now: bool
    opens_at: datetime | None = Field(description="When a closed store opens next (UTC)")


class NearbyQuery(BaseModel):
    """The nearby list's query: validated as one model (one pass per request, not one per
    parameter); the schema lists the same query parameters."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float | None = Field(
        None,
        ge=MIN_RADIUS_M,
        le=get_settings().search_max_radius_m,
        description="Metres; default and maximum: the search maximum (50 km)",
    )
    limit: int = Field(PAGE_DEFAULT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description=CURSOR_DESCRIPTION,
    )


class NearbyItemOut(BaseModel):
    store: NearbyStoreOut
    distance_m: float
