"""Request and response shapes of the stores, catalogue and inventory API (API.md, Stores)."""

import functools
import zoneinfo
from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from o2o import errors
from o2o.db import INT4_MAX
from o2o.geo import LatLon
from o2o.i18n import gettext as _
from o2o.text import NOT_BLANK
from stores import hours

MAX_ON_HAND = 1_000_000
MAX_PRICE_MINOR = 1_000_000_000
MAX_LOTS_PER_SYNC = 5000
MAX_IMPORT_FEATURES = 10_000
PAGE_DEFAULT = 20
PAGE_MAX = 100

Service = Literal["pickup", "delivery"]


def _text(max_length: int) -> Any:
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=max_length, pattern=NOT_BLANK
        ),
    ]


# Names the system zone database also holds that are not places: "localtime" is whatever the
# server is set to, "Factory" is a placeholder.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def check_timezone(value: str) -> str:
    """Accept only IANA zone names (not "localtime" or file paths zoneinfo would also open)."""
    if value not in _known_timezones():
        # A lookup in the zone database, as an unknown product is one in the catalogue.
        raise errors.rule_error(
            "unknown_timezone",
            _("unknown IANA timezone {value!r} (for example 'Asia/Shanghai')").format(value=value),
        )
    return value


def gtin_check_digit(body: str) -> int:
    """Return the GS1 check digit for the digits before it (weights 3, 1, 3, ... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


GTIN_PATTERN = r"^([0-9]{8}|[0-9]{12,14})$"


def check_gtin(value: str) -> str:
    """Accept a GTIN-8, -12, -13 or -14 whose last digit is the right GS1 check digit."""
    if not value.isascii() or not value.isdigit() or len(value) not in (8, 12, 13, 14):
        raise ValueError(_("a GTIN is 8, 12, 13 or 14 digits"))
    if gtin_check_digit(value[:-1]) != int(value[-1]):
        # The schema states the digits; a checksum it cannot, so this refusal has its own code.
        raise errors.rule_error(
            "gtin_check_digit",
            _("the GTIN check digit is wrong (expected {gtin_check_digit})").format(
                gtin_check_digit=gtin_check_digit(value[:-1])
            ),
        )
    return value


Name = _text(200)
Address = _text(500)
Timezone = Annotated[str, AfterValidator(check_timezone)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. CNY")]
Gtin = Annotated[
    str,
    Field(pattern=GTIN_PATTERN, description="8, 12, 13 or 14 digits, the last a GS1 check digit"),
    AfterValidator(check_gtin),
]
PrepMinutes = Annotated[StrictInt, Field(ge=0, le=600)]
FeeMinor = Annotated[StrictInt, Field(ge=0, le=MAX_PRICE_MINOR)]
ShelfLifeDays = Annotated[StrictInt, Field(ge=0, le=3650)]
CourierSpeedKmh = Annotated[StrictFloat, Field(gt=0, le=120, allow_inf_nan=False)]
DetourFactor = Annotated[StrictFloat, Field(ge=1, le=5, allow_inf_nan=False)]
Geometry = Annotated[dict[str, Any], Field(description="GeoJSON Polygon or MultiPolygon")]


class OpeningHoursEntry(BaseModel):
    """One opening interval in the store's local time; `closes` before `opens` runs overnight."""

    model_config = ConfigDict(extra="forbid")

    weekday: StrictInt = Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")
    opens: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["08:00"])
    closes: str = Field(
        pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
        examples=["22:00"],
        description='"24:00" = midnight',
    )

    @model_validator(mode="after")
    def _valid_interval(self) -> "OpeningHoursEntry":
        # The patterns hold the format; what is left is an interval of no length.
        try:
            hours.parse_interval(self.model_dump())
        except ValueError as exc:
            raise errors.rule_error("empty_opening_interval", str(exc)) from None
        return self


def _check_week(value: list[OpeningHoursEntry] | None) -> list[OpeningHoursEntry] | None:
    if value is not None:
        # Each entry is valid on its own by now; what is left is intervals that overlap.
        try:
            hours.parse_hours([entry.model_dump() for entry in value])
        except ValueError as exc:
            raise errors.rule_error("overlapping_hours", str(exc)) from None
    return value


OpeningHours = Annotated[
    list[OpeningHoursEntry] | None,
    Field(max_length=hours.MAX_INTERVALS, description="null = always open"),
    AfterValidator(_check_week),
]
Services = Annotated[list[Service], Field(min_length=1, max_length=2)]


def _dedupe_services(value: list[Service] | None) -> list[Service] | None:
    return None if value is None else sorted(set(value), key=["pickup", "delivery"].index)


class StoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    address: Address
    location: LatLon
    timezone: Timezone = Field(examples=["Asia/Shanghai"])
    opening_hours: OpeningHours = None
    services: Services = ["pickup"]
    prep_minutes: PrepMinutes = 10
    delivery_fee_minor: FeeMinor = 0
    currency: Currency = "CNY"
    delivery_zone: Geometry | None = None
    min_shelf_life_days: ShelfLifeDays = 30
    courier_speed_kmh: CourierSpeedKmh = 18.0
    detour_factor: DetourFactor = 1.35

    _services = field_validator("services")(_dedupe_services)


# Fields a PATCH may set to null; every other field, when sent, needs a value.
NULLABLE_STORE_FIELDS = frozenset({"opening_hours", "delivery_zone"})


def _no_null_defaults(schema: dict[str, Any]) -> None:
    # Left out means "unchanged", not null: the schema shows no null default for those fields.
    for name, prop in schema["properties"].items():
        if name not in NULLABLE_STORE_FIELDS:
            prop.pop("default", None)


class StoreUpdate(BaseModel):
    """A partial update: only the fields sent change; null clears hours (always open) or zone.

    The other fields are typed without None (null is refused as the wrong type); None is only
    their default for "not sent", which pydantic does not validate.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)

    name: Name = None
    address: Address = None
    location: LatLon = None
    timezone: Timezone = None
    opening_hours: OpeningHours = None
    services: Services = None
    prep_minutes: PrepMinutes = None
    delivery_fee_minor: FeeMinor = None
    currency: Currency = None
    delivery_zone: Geometry | None = None
    min_shelf_life_days: ShelfLifeDays = None
    courier_speed_kmh: CourierSpeedKmh = None
    detour_factor: DetourFactor = None
    is_active: StrictBool = None

    _services = field_validator("services")(_dedupe_services)

    @model_validator(mode="after")
    def _no_null_for_required_fields(self) -> "StoreUpdate":
        nulls = sorted(
            name
            for name in self.model_fields_set - NULLABLE_STORE_FIELDS
            if getattr(self, name) is None
        )
        if nulls:
            raise ValueError(
                _("these fields may not be null: {fields}").format(fields=", ".join(nulls))
            )
        return self


class DeliverySlotOut(BaseModel):
    start: datetime
    end: datetime
    capacity: int = Field(description="Orders the slot takes")
    left: int = Field(description="Places still free (only slots with room are listed)")


class DeliverySlotsOut(BaseModel):
    store_id: int
    timezone: str
    slots: list[DeliverySlotOut]


class StoreOut(BaseModel):
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
    delivery_zone: dict[str, Any] | None
    min_shelf_life_days: int
    courier_speed_kmh: float
    detour_factor: float
    is_active: bool
    is_open_now: bool
    opens_at: datetime | None = Field(description="When a closed store opens next (UTC)")


class StoreImportIn(BaseModel):
    """A GeoJSON FeatureCollection: Point geometry = location, properties = the StoreIn fields."""

    type: Literal["FeatureCollection"]
    # Each feature is checked on its own so a refusal can name its index.
    features: list[Any] = Field(min_length=1, max_length=MAX_IMPORT_FEATURES)


class ImportRefusal(BaseModel):
    index: int
    reason: str


class StoreImportOut(BaseModel):
    created: int
    store_ids: list[int]
    refused: list[ImportRefusal]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    generic_name: Name
    strength: _text(100) = Field(examples=["500 mg"])
    dosage_form: _text(100) = Field(examples=["tablet"])
    pack_size: StrictInt = Field(ge=1, le=100_000)
    gtin: Gtin = Field(examples=["6901234567892"])
    rx_only: StrictBool = False
    controlled: StrictBool = Field(False, description="Never sold online")
    max_per_order: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None
    route: _text(50) | None = Field(
        None,
        examples=["oral"],
        description="How it is taken; by default what the dosage form implies (oral, topical, "
        "nasal, ophthalmic, ...). Part of the equivalence key",
    )


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    generic_name: str
    strength: str
    dosage_form: str
    pack_size: int
    gtin: str
    rx_only: bool
    controlled: bool
    max_per_order: int | None
    route: str
    equivalence_key: str | None = Field(
        None,
        description="generic|strength|form|route, normalised: products sharing it are "
        "equivalents (GET /products/{id}/equivalents)",
    )


class EquivalentsOut(BaseModel):
    """The products that may stand in for one product (same generic, strength, form, route)."""

    product_id: int
    equivalence_key: str | None
    items: list[ProductOut]


class InventoryLotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=INT4_MAX)
    lot_number: _text(64)
    # The pattern states the range in the schema (JSON Schema has no bounds for dates).
    expiry_date: date = Field(
        ge=date(2000, 1, 1),
        le=date(2099, 12, 31),
        json_schema_extra={"pattern": r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$"},
    )
    on_hand: StrictInt = Field(ge=0, le=MAX_ON_HAND, description="Sets the quantity on hand")
    price_minor: StrictInt = Field(ge=0, le=MAX_PRICE_MINOR)
    currency: Currency


class InventoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sync_id: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=NOT_BLANK),
        Field(examples=["pos-2026-11-22-0001"]),
    ]
    lots: list[InventoryLotIn] = Field(min_length=1, max_length=MAX_LOTS_PER_SYNC)

    @model_validator(mode="after")
    def _one_line_per_lot(self) -> "InventoryIn":
        seen: set[tuple[int, str]] = set()
        repeated: set[tuple[int, str]] = set()
        for lot in self.lots:
            key = (lot.product_id, lot.lot_number)
            (repeated if key in seen else seen).add(key)
        if repeated:
            listed = ", ".join(f"product {p} lot {n!r}" for p, n in sorted(repeated))
            # uniqueItems cannot say "unique by product and lot number": a code of its own.
            raise errors.rule_error(
                "repeated_lot",
                _("each lot may appear once per sync; repeated: {listed}").format(listed=listed),
            )
        return self


class InventorySyncOut(BaseModel):
    applied: bool = Field(description="false: this sync_id was applied before; nothing changed")
    lot_count: int


class LotOut(BaseModel):
    """A lot as store staff see it."""

    id: int
    product_id: int
    product_name: str
    gtin: str
    lot_number: str
    expiry_date: date
    on_hand: int
    reserved: int = Field(description="Held for online orders")
    available: int = Field(description="on_hand - reserved")
    sellable: bool = Field(description="Expires after the store's minimum remaining shelf life")
    price_minor: int
    currency: str
    updated_at: datetime


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
