"""Stores and their delivery zones, the product catalogue, and the keyset paging of their lists.

Stock lives in `stores.inventory` (what points of sale push) and `stores.allocation` (what orders
reserve); search in `stores.search`, `stores.cart` and `stores.nearby`."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import shapely
from pydantic import BaseModel, ValidationError
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import ColumnElement, Float, Row, Select, func, select, text, tuple_
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from o2o import clock, pagination
from o2o.db import INT4_MAX
from o2o.errors import Conflict, DomainError, InvalidInput, NotFound
from o2o.geo import (
    GeometryError,
    LatLon,
    area_element,
    area_geojson,
    parse_area,
    point_element,
    to_latlon,
)
from o2o.i18n import gettext
from stores import equivalents, hours
from stores.models import Product, Store
from stores.nearby import NearbyStore
from stores.schemas import (
    ImportRefusal,
    ProductIn,
    StoreImportIn,
    StoreImportOut,
    StoreIn,
    StoreOut,
    StoreUpdate,
)

# Stores ----------------------------------------------------------------------------------------


def get_store(session: Session, store_id: int) -> Store:
    """Return the store with this id, or raise 404 store_not_found."""
    store = session.get(Store, store_id) if 1 <= store_id <= INT4_MAX else None
    if store is None:
        raise NotFound(
            gettext("No such store."), code="store_not_found", details={"store_id": store_id}
        )
    return store


def services_of(store: Store | NearbyStore) -> list[str]:
    return [
        name
        for name, on in (("pickup", store.offers_pickup), ("delivery", store.offers_delivery))
        if on
    ]


class ShelfLifeRule(Protocol):
    """What a store's sellable lots hang on: its zone (its local day) and its shelf-life floor
    (a `Store`, or the row a search read of it)."""

    @property
    def timezone(self) -> str: ...

    @property
    def min_shelf_life_days(self) -> int: ...


def min_sellable_expiry(store: ShelfLifeRule, now: datetime) -> date:
    """Return the earliest expiry a lot may have to count as sellable at this store now."""
    return clock.today(store.timezone, at=now) + timedelta(days=store.min_shelf_life_days)


def store_out(store: Store, *, now: datetime | None = None) -> StoreOut:
    """Describe a store for the API, with whether it is open now and, if not, when it opens."""
    now = now or clock.now()
    return StoreOut(
        id=store.id,
        name=store.name,
        address=store.address,
        location=LatLon(**to_latlon(store.location)),
        timezone=store.timezone,
        opening_hours=store.opening_hours,
        services=services_of(store),
        prep_minutes=store.prep_minutes,
        delivery_fee_minor=store.delivery_fee_minor,
        currency=store.currency,
        delivery_zone=area_geojson(store.delivery_zone),
        min_shelf_life_days=store.min_shelf_life_days,
        courier_speed_kmh=store.courier_speed_kmh,
        detour_factor=store.detour_factor,
        is_active=store.is_active,
        is_open_now=hours.is_open_at(store.opening_hours, store.timezone, now),
        opens_at=hours.next_opening(store.opening_hours, store.timezone, now),
    )


def _rings(geometry: dict[str, Any]) -> Iterable[list]:
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )
    for polygon in polygons:
        yield from polygon


def parse_zone(geojson: Any) -> Polygon | MultiPolygon:
    """Validate a delivery zone; raise 422 invalid_zone with the reason. Never stores anything."""
    try:
        geom = parse_area(geojson)
        # Shapely closes an open ring silently; GeoJSON (RFC 7946 3.1.6) requires it closed, and
        # an open ring usually means a truncated or mistyped file.
        if any(list(ring[0]) != list(ring[-1]) for ring in _rings(geojson)):
            raise GeometryError(
                "Each ring must be closed: its last position must repeat its first."
            )
    except GeometryError as exc:
        raise InvalidInput(
            gettext("The delivery zone is refused: {exc}").format(exc=exc),
            code="invalid_zone",
            details={"reason": str(exc)},
        ) from None
    # GeoJSON may carry an altitude; the column is 2D.
    return shapely.force_2d(geom)


def _store_columns(data: BaseModel, fields: Iterable[str]) -> dict[str, Any]:
    """Map API fields onto Store columns (validating the zone)."""
    values: dict[str, Any] = {}
    for name in fields:
        value = getattr(data, name)
        if name == "location":
            values["location"] = point_element(value.lat, value.lon)
        elif name == "services":
            values["offers_pickup"] = "pickup" in value
            values["offers_delivery"] = "delivery" in value
        elif name == "delivery_zone":
            values["delivery_zone"] = None if value is None else area_element(parse_zone(value))
        elif name == "opening_hours":
            values["opening_hours"] = None if value is None else [h.model_dump() for h in value]
        else:
            values[name] = value
    return values


def _require_zone_for_delivery(offers_delivery: bool, zone: Any) -> None:
    if offers_delivery and zone is None:
        raise InvalidInput(
            gettext("A store that offers delivery needs a delivery_zone."), code="zone_required"
        )


def new_store(data: StoreIn) -> Store:
    """Build a validated, unsaved store (raises 422 for an invalid or missing zone)."""
    values = _store_columns(data, StoreIn.model_fields)
    _require_zone_for_delivery(values["offers_delivery"], values["delivery_zone"])
    return Store(**values, is_active=True)


def create_store(session: Session, data: StoreIn) -> Store:
    """Register a store."""
    store = new_store(data)
    session.add(store)
    session.flush()
    return store


def update_store(session: Session, store: Store, data: StoreUpdate) -> Store:
    """Change the fields sent; everything is checked before anything changes."""
    values = _store_columns(data, data.model_fields_set)
    _require_zone_for_delivery(
        values.get("offers_delivery", store.offers_delivery),
        values.get("delivery_zone", store.delivery_zone),
    )
    for name, value in values.items():
        setattr(store, name, value)
    session.flush()
    return store


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "properties"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _store_from_feature(feature: Any) -> Store:
    """Build a store from one GeoJSON Feature; ValueError says why it is refused."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ValueError("not a GeoJSON Feature")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        raise ValueError("the geometry must be a Point: the store's location")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) not in (2, 3):
        raise ValueError("a Point's coordinates are [lon, lat]")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        raise ValueError("properties must be an object with the store's fields")
    if "location" in properties:
        raise ValueError("give the location as the Point geometry, not as a property")
    try:
        data = StoreIn.model_validate(
            {**properties, "location": {"lat": coordinates[1], "lon": coordinates[0]}}
        )
        return new_store(data)
    except ValidationError as exc:
        raise ValueError(_validation_reason(exc)) from None
    except DomainError as exc:
        raise ValueError(exc.message) from None


def import_stores(
    session: Session, collection: StoreImportIn, *, partial: bool = False
) -> StoreImportOut:
    """Create a store per Feature: all or nothing, or with `partial` the valid ones only."""
    stores: list[Store] = []
    refused: list[ImportRefusal] = []
    for index, feature in enumerate(collection.features):
        try:
            stores.append(_store_from_feature(feature))
        except ValueError as exc:
            refused.append(ImportRefusal(index=index, reason=str(exc)))
    if refused and not partial:
        raise InvalidInput(
            gettext("{invalid} of {total} features are invalid; nothing was imported.").format(
                invalid=len(refused), total=len(collection.features)
            ),
            code="invalid_features",
            details={"refused": [r.model_dump() for r in refused]},
        )
    session.add_all(stores)
    session.flush()
    return StoreImportOut(
        created=len(stores), store_ids=[store.id for store in stores], refused=refused
    )


# Paging ----------------------------------------------------------------------------------------


def keyset_page(
    session: Session,
    query: Select,
    *,
    listing: str,
    keys: Sequence[tuple[ColumnElement, Callable[[Any], Any]]],
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """Run `query` ordered by `keys` (expression, cursor reader of `o2o.pagination`), after the
    cursor's row; return the page and the cursor of the next one (None on the last page)."""
    columns = [expression for expression, _ in keys]
    if cursor:
        after = pagination.decode_cursor(cursor, listing, [read for _, read in keys])
        query = query.where(tuple_(*columns) > tuple_(*after))
    rows = session.execute(query.add_columns(*columns).order_by(*columns).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = (
        pagination.encode_cursor(listing, page[-1][-len(keys) :]) if len(rows) > limit else None
    )
    return page, next_cursor


# Products --------------------------------------------------------------------------------------


def get_product(session: Session, product_id: int) -> Product:
    """Return the product with this id, or raise 404 product_not_found."""
    product = session.get(Product, product_id) if 1 <= product_id <= INT4_MAX else None
    if product is None:
        raise NotFound(
            gettext("No such product."),
            code="product_not_found",
            details={"product_id": product_id},
        )
    return product


def _gtin_taken(product_id: int) -> Conflict:
    return Conflict(
        gettext("A product with this GTIN exists already."),
        code="gtin_taken",
        details={"product_id": product_id},
    )


def create_product(session: Session, data: ProductIn) -> Product:
    """Add a product to the catalogue; its GTIN must be new (409 gtin_taken)."""
    # One GTIN may be written with 8, 12, 13 or 14 digits: compare them padded to 14. That scans
    # the catalogue, which is fine for a rare admin write.
    existing = session.scalar(
        select(Product.id).where(func.lpad(Product.gtin, 14, "0") == data.gtin.zfill(14))
    )
    if existing is not None:
        raise _gtin_taken(existing)
    values = data.model_dump()
    values["route"] = (values["route"] or equivalents.default_route(data.dosage_form)).lower()
    product = Product(**values)
    session.add(product)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # created at the same moment by another request
        raise _gtin_taken(
            session.scalar(select(Product.id).where(Product.gtin == data.gtin))
        ) from None
    return product


TRIGRAM = 3


def like_pattern(q: str) -> str:
    """A LIKE pattern that finds q anywhere, its wildcards taken literally ("50%" finds "50%")."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# A name search is planned for its own pattern, even on a connection that keeps generic plans
# (the async engines', `o2o.db.GENERIC_PLANS`): one statement serves every pattern, and a plan
# made for no pattern in particular would serve a three-letter word and a whole name alike. One
# long enough for trigrams also has sequential scans off, so it reads the trigram indexes. One
# statement reads the settings it changes and changes them (`:seqscan`: off, or as it was); one
# more puts them back for the rest of the transaction.
_NAME_SEARCH_PLANNING = text(
    """
    SELECT was.seqscan, was.plans,
           set_config('enable_seqscan', coalesce(CAST(:seqscan AS text), was.seqscan), true)
               AS seqscan_now,
           set_config('plan_cache_mode', 'force_custom_plan', true) AS plans_now
    FROM (SELECT current_setting('enable_seqscan') AS seqscan,
                 current_setting('plan_cache_mode') AS plans
          OFFSET 0) AS was
    """
)
_SETTINGS_BACK = text(
    "SELECT set_config('enable_seqscan', :seqscan, true),"
    " set_config('plan_cache_mode', :plans, true)"
)


@contextmanager
def _name_search_planning(session: Session, *, indexed: bool) -> Iterator[None]:
    """Plan the statements inside as `_NAME_SEARCH_PLANNING` says (`indexed`: sequential scans
    off), then put the settings back, after a refusal (a bad cursor) too. After a database error
    the transaction is aborted and takes the settings with it."""
    was = session.execute(_NAME_SEARCH_PLANNING, {"seqscan": "off" if indexed else None}).one()
    try:
        yield
    except DBAPIError:
        raise
    except BaseException:
        session.execute(_SETTINGS_BACK, {"seqscan": was.seqscan, "plans": was.plans})
        raise
    session.execute(_SETTINGS_BACK, {"seqscan": was.seqscan, "plans": was.plans})


def search_products(
    session: Session, q: str | None, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[Product], str | None]:
    """Find products by name or generic name (best match first), or by GTIN when q is digits.

    Plans, checked with EXPLAIN ANALYZE on 5,000 products: a name search is a BitmapOr of the
    trigram GIN indexes ix_products_name_trgm and ix_products_generic_name_trgm answering the
    ILIKEs (0.2-0.4 ms), then a sort of the few matches by similarity; a GTIN search is a range
    scan of the unique GTIN index; no q walks the primary key.
    """
    q = (q or "").strip()
    query = select(Product)
    planner = nullcontext()
    if not q:
        keys = [(Product.id, pagination.integer)]
        listing = "products"
    elif q.isascii() and q.isdigit():
        # Every digit string starting with q lies between q and q padded with 9s (GTINs are
        # digits only), so the btree answers the prefix whatever the database's collation.
        query = query.where(Product.gtin >= q, Product.gtin <= q.ljust(14, "9"))
        keys = [(Product.gtin, pagination.text)]
        listing = "products-by-gtin"
    else:
        pattern = like_pattern(q)
        query = query.where(Product.name.ilike(pattern) | Product.generic_name.ilike(pattern))
        score = func.greatest(
            func.similarity(Product.name, q, type_=Float),
            func.similarity(Product.generic_name, q, type_=Float),
            type_=Float,
        )
        keys = [(-score, pagination.number), (Product.id, pagination.integer)]
        listing = "products-by-name"
        # PostgreSQL prices ILIKE as a cheap operator, so with the default random_page_cost it
        # scans a catalogue of a few thousand rows rather than read the indexes for a long
        # pattern: 15-85 ms instead of 0.3 ms. Shorter patterns have no trigram to look up, and
        # there the scan is the right plan.
        planner = _name_search_planning(session, indexed=len(q) >= TRIGRAM)
    with planner:
        rows, next_cursor = keyset_page(
            session, query, listing=listing, keys=keys, limit=limit, cursor=cursor
        )
    return [row[0] for row in rows], next_cursor
