"""Stores and their delivery zones, the product catalogue, and stock pushed from the stores' points
of sale. Other domains call this module only: search is re-exported at the end."""

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from pydantic import BaseModel, ValidationError
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import ColumnElement, Float, Row, Select, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from stores import hours
from stores.models import InventorySync, Lot, Product, Store
from stores.schemas import (
    INT4_MAX,
    ImportRefusal,
    InventoryIn,
    InventoryLotIn,
    InventorySyncOut,
    LotOut,
    ProductIn,
    StoreImportIn,
    StoreImportOut,
    StoreIn,
    StoreOut,
    StoreUpdate,
)
from stores.search import NearbyStore

# Stores ----------------------------------------------------------------------------------------


def get_store(session: Session, store_id: int) -> Store:
    """Return the store with this id, or raise 404 store_not_found."""
    store = session.get(Store, store_id) if 1 <= store_id <= INT4_MAX else None
    if store is None:
        raise NotFound("No such store.", code="store_not_found", details={"store_id": store_id})
    return store


def services_of(store: Store | NearbyStore) -> list[str]:
    return [
        name
        for name, on in (("pickup", store.offers_pickup), ("delivery", store.offers_delivery))
        if on
    ]


def min_sellable_expiry(store: Store, now: datetime) -> date:
    """Return the earliest expiry a lot may have to count as sellable at this store now."""
    today = now.astimezone(ZoneInfo(store.timezone)).date()
    return today + timedelta(days=store.min_shelf_life_days)


def store_out(store: Store, *, now: datetime | None = None) -> StoreOut:
    """Describe a store for the API, with whether it is open now and, if not, when it opens."""
    now = now or datetime.now(UTC)
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
            f"The delivery zone is refused: {exc}",
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
            "A store that offers delivery needs a delivery_zone.", code="zone_required"
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
            f"{len(refused)} of {len(collection.features)} features are invalid; "
            "nothing was imported.",
            code="invalid_features",
            details={"refused": [r.model_dump() for r in refused]},
        )
    session.add_all(stores)
    session.flush()
    return StoreImportOut(
        created=len(stores), store_ids=[store.id for store in stores], refused=refused
    )


# Paging ----------------------------------------------------------------------------------------
# Keyset paging: the cursor holds the sort key of the last row sent, so a page costs the same
# however deep it is and rows added meanwhile are neither skipped nor repeated.


def _encode_cursor(kind: str, values: Sequence[Any]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, kind: str, types: Sequence[Any]) -> tuple:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(types) + 1 or raw[0] != kind:
            raise ValueError("cursor of another listing")
        return tuple(convert(value) for convert, value in zip(types, raw[1:], strict=True))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise InvalidInput("The cursor is not valid.", code="invalid_cursor") from None


def _keyset_page(
    session: Session,
    query: Select,
    *,
    kind: str,
    keys: Sequence[tuple[ColumnElement, Any]],
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """Run `query` ordered by `keys` (expression, python type), after the cursor's row."""
    columns = [expression for expression, _ in keys]
    if cursor:
        after = _decode_cursor(cursor, kind, [convert for _, convert in keys])
        query = query.where(tuple_(*columns) > tuple_(*after))
    rows = session.execute(query.add_columns(*columns).order_by(*columns).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = _encode_cursor(kind, page[-1][-len(keys) :]) if len(rows) > limit else None
    return page, next_cursor


# Products --------------------------------------------------------------------------------------


def get_product(session: Session, product_id: int) -> Product:
    """Return the product with this id, or raise 404 product_not_found."""
    product = session.get(Product, product_id) if 1 <= product_id <= INT4_MAX else None
    if product is None:
        raise NotFound(
            "No such product.", code="product_not_found", details={"product_id": product_id}
        )
    return product


def _gtin_taken(product_id: int) -> Conflict:
    return Conflict(
        "A product with this GTIN exists already.",
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
    product = Product(**data.model_dump())
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


@contextmanager
def _planner_setting(session: Session, name: str, value: str) -> Iterator[None]:
    """Change a planner setting for the statements inside, then put the previous value back."""
    previous = session.scalar(text("SELECT current_setting(:name)"), {"name": name})
    session.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    yield
    session.execute(
        text("SELECT set_config(:name, :value, true)"), {"name": name, "value": previous}
    )


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
        keys = [(Product.id, int)]
        kind = "all"
    elif q.isascii() and q.isdigit():
        # Every digit string starting with q lies between q and q padded with 9s (GTINs are
        # digits only), so the btree answers the prefix whatever the database's collation.
        query = query.where(Product.gtin >= q, Product.gtin <= q.ljust(14, "9"))
        keys = [(Product.gtin, str)]
        kind = "gtin"
    else:
        pattern = like_pattern(q)
        query = query.where(Product.name.ilike(pattern) | Product.generic_name.ilike(pattern))
        score = func.greatest(
            func.similarity(Product.name, q, type_=Float),
            func.similarity(Product.generic_name, q, type_=Float),
            type_=Float,
        )
        keys = [(-score, float), (Product.id, int)]
        kind = "name"
        if len(q) >= TRIGRAM:
            # PostgreSQL prices ILIKE as a cheap operator, so with the default random_page_cost
            # it scans a catalogue of a few thousand rows rather than read the indexes for a
            # long pattern: 15-85 ms instead of 0.3 ms. Shorter patterns have no trigram to look
            # up, and there the scan is the right plan.
            planner = _planner_setting(session, "enable_seqscan", "off")
    with planner:
        rows, next_cursor = _keyset_page(
            session, query, kind=kind, keys=keys, limit=limit, cursor=cursor
        )
    return [row[0] for row in rows], next_cursor


# Inventory -------------------------------------------------------------------------------------

# One upsert for API syncs and bulk imports: `on_hand` sets the quantity; `reserved` belongs to
# online orders and is never written here. Unchanged lots are not rewritten (no dead tuples and
# no updated_at churn when a point of sale re-sends its whole stock).
LOT_UPSERT_COLUMNS = "store_id, product_id, lot_number, expiry_date, on_hand, price_minor, currency"
LOT_UPSERT_CONFLICT = """
ON CONFLICT (store_id, product_id, lot_number) DO UPDATE
SET expiry_date = EXCLUDED.expiry_date, on_hand = EXCLUDED.on_hand,
    price_minor = EXCLUDED.price_minor, currency = EXCLUDED.currency, updated_at = now()
WHERE (lots.expiry_date, lots.on_hand, lots.price_minor, lots.currency)
      IS DISTINCT FROM
      (EXCLUDED.expiry_date, EXCLUDED.on_hand, EXCLUDED.price_minor, EXCLUDED.currency)
"""


def lot_upsert_sql(select_sql: str) -> str:
    """Return the lots upsert fed by a SELECT of LOT_UPSERT_COLUMNS."""
    return f"INSERT INTO lots ({LOT_UPSERT_COLUMNS}) {select_sql} {LOT_UPSERT_CONFLICT}"


RESERVED_CHECK = "ck_lots_reserved_within_on_hand"


def raise_if_below_reserved(exc: IntegrityError) -> None:
    """Turn the database's refusal of on_hand below reserved into 409 below_reserved.

    The checks before an upsert make this rare: it means an order reserved stock of a lot
    created while the upsert ran.
    """
    if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) == RESERVED_CHECK:
        raise Conflict(
            "Stock was reserved for an order while this update ran; send it again.",
            code="below_reserved",
        ) from None


_INCOMING = """unnest(
    CAST(:product_ids AS integer[]), CAST(:lot_numbers AS text[]), CAST(:expiry_dates AS date[]),
    CAST(:on_hands AS integer[]), CAST(:prices AS integer[]), CAST(:currencies AS text[])
) WITH ORDINALITY AS t(product_id, lot_number, expiry_date, on_hand, price_minor, currency, n)"""


def _incoming_params(lots: Sequence[InventoryLotIn]) -> dict[str, list]:
    return {
        "product_ids": [lot.product_id for lot in lots],
        "lot_numbers": [lot.lot_number for lot in lots],
        "expiry_dates": [lot.expiry_date for lot in lots],
        "on_hands": [lot.on_hand for lot in lots],
        "prices": [lot.price_minor for lot in lots],
        "currencies": [lot.currency for lot in lots],
    }


def _check_currency(store: Store, lots: Sequence[InventoryLotIn]) -> None:
    foreign = sorted({lot.currency for lot in lots} - {store.currency})
    if foreign:
        raise InvalidInput(
            f"This store sells in {store.currency}; lots priced in {', '.join(foreign)} "
            "are refused.",
            code="currency_mismatch",
            details={"store_currency": store.currency, "currencies": foreign},
        )


def _check_products_exist(session: Session, product_ids: set[int]) -> None:
    found = set(session.scalars(select(Product.id).where(Product.id.in_(product_ids))))
    unknown = sorted(product_ids - found)
    if unknown:
        raise InvalidInput(
            f"Unknown products: {', '.join(map(str, unknown))}; nothing was applied.",
            code="unknown_products",
            details={"product_ids": unknown},
        )


def _lock_and_check_reserved(session: Session, store_id: int, params: dict[str, list]) -> None:
    """Lock the lots this sync changes and refuse quantities below what orders hold."""
    # Locked in id order, as the order reservations lock them: never a deadlock, and no order
    # can reserve more of these lots between this check and the upsert.
    rows = session.execute(
        text(
            f"""
            SELECT l.product_id, l.lot_number, l.reserved, t.on_hand
            FROM lots AS l JOIN {_INCOMING}
              ON l.product_id = t.product_id AND l.lot_number = t.lot_number
            WHERE l.store_id = :store_id
            ORDER BY l.id
            FOR UPDATE OF l
            """
        ),
        {**params, "store_id": store_id},
    ).all()
    short = [row for row in rows if row.on_hand < row.reserved]
    if short:
        raise Conflict(
            "On hand may not go below what online orders have reserved; nothing was applied.",
            code="below_reserved",
            details={
                "lots": [
                    {
                        "product_id": row.product_id,
                        "lot_number": row.lot_number,
                        "on_hand": row.on_hand,
                        "reserved": row.reserved,
                    }
                    for row in short
                ]
            },
        )


def expire_lots(session: Session, store_id: int | None = None) -> None:
    """Make the session read lots (of one store, or all) again after a bulk SQL write."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Lot) and store_id in (None, obj.store_id):
            session.expire(obj)


def apply_inventory_sync(session: Session, store: Store, sync: InventoryIn) -> InventorySyncOut:
    """Upsert a point-of-sale sync of lots; a sync_id seen before for the store changes nothing.

    All or nothing: unknown products (422) or a quantity below what orders hold (409) refuse the
    whole sync. The sync id is claimed first with ON CONFLICT DO NOTHING, so of two identical
    syncs running at once the second waits for the first and then finds its id taken.
    """
    _check_currency(store, sync.lots)
    # Sorted, so two syncs touching the same new lots insert them in the same order.
    lots = sorted(sync.lots, key=lambda lot: (lot.product_id, lot.lot_number))
    params = _incoming_params(lots)
    try:
        # A savepoint: a refusal leaves nothing behind even for a caller that carries on.
        with session.begin_nested():
            claimed = session.execute(
                pg_insert(InventorySync)
                .values(store_id=store.id, sync_id=sync.sync_id, lot_count=len(lots))
                .on_conflict_do_nothing()
                .returning(InventorySync.sync_id)
            ).first()
            if claimed is None:
                return InventorySyncOut(applied=False, lot_count=0)
            product_ids = set(params["product_ids"])
            _check_products_exist(session, product_ids)
            _lock_and_check_reserved(session, store.id, params)
            session.execute(
                text(
                    lot_upsert_sql(
                        f"SELECT :store_id, product_id, lot_number, expiry_date, on_hand, "
                        f"price_minor, currency FROM {_INCOMING} ORDER BY n"
                    )
                ),
                {**params, "store_id": store.id},
            )
            refresh_stock_stats(session, product_ids)
    except IntegrityError as exc:
        raise_if_below_reserved(exc)
        raise
    expire_lots(session, store.id)
    return InventorySyncOut(applied=True, lot_count=len(lots))


def refresh_stock_stats(session: Session, product_ids: Iterable[int] | None = None) -> int:
    """Recount the stores holding available, unexpired stock of products (all if None).

    Planning input for search only: a stale count slows a search, never changes its answer.
    """
    ids = None if product_ids is None else sorted(set(product_ids))
    if ids == []:
        return 0
    where = "" if ids is None else "WHERE p.id = ANY(CAST(:ids AS integer[]))"
    # ORDER BY: rows are locked in product order, so concurrent refreshes cannot deadlock.
    result = session.execute(
        text(
            f"""
            INSERT INTO product_stock_stats (product_id, store_count, refreshed_at)
            SELECT p.id, count(DISTINCT l.store_id), now()
            FROM products AS p
            LEFT JOIN lots AS l ON l.product_id = p.id
                 AND l.on_hand > l.reserved AND l.expiry_date >= current_date
            {where}
            GROUP BY p.id
            ORDER BY p.id
            ON CONFLICT (product_id) DO UPDATE
            SET store_count = EXCLUDED.store_count, refreshed_at = EXCLUDED.refreshed_at
            """
        ),
        {"ids": ids},
    )
    return result.rowcount


def list_store_lots(
    session: Session,
    store: Store,
    *,
    product_id: int | None = None,
    limit: int = 20,
    cursor: str | None = None,
    now: datetime | None = None,
) -> tuple[list[LotOut], str | None]:
    """List a store's lots by product, then soonest expiry first (the order they are sold in)."""
    sellable_from = min_sellable_expiry(store, now or datetime.now(UTC))
    query = (
        select(Lot, Product.name, Product.gtin)
        .join(Product, Product.id == Lot.product_id)
        .where(Lot.store_id == store.id)
    )
    if product_id is not None:
        query = query.where(Lot.product_id == product_id)
    rows, next_cursor = _keyset_page(
        session,
        query,
        kind="lots",
        keys=[(Lot.product_id, int), (Lot.expiry_date, date.fromisoformat), (Lot.id, int)],
        limit=limit,
        cursor=cursor,
    )
    items = [
        LotOut(
            id=lot.id,
            product_id=lot.product_id,
            product_name=name,
            gtin=gtin,
            lot_number=lot.lot_number,
            expiry_date=lot.expiry_date,
            on_hand=lot.on_hand,
            reserved=lot.reserved,
            available=lot.on_hand - lot.reserved,
            sellable=lot.expiry_date >= sellable_from,
            price_minor=lot.price_minor,
            currency=lot.currency,
            updated_at=lot.updated_at,
        )
        for lot, name, gtin, *_ in rows
    ]
    return items, next_cursor


# Search, lot allocation and the travel-time model live in their own modules; other domains reach
# them through this one.
from stores.allocation import (  # noqa: E402,F401
    Allocation,
    InsufficientStock,
    LineRequest,
    Shortage,
    reserve_lines,
)
from stores.allocation import commit as commit_stock  # noqa: E402,F401
from stores.allocation import release as release_stock  # noqa: E402,F401
from stores.eta import travel_minutes  # noqa: E402,F401
from stores.search import CartLine, StoreMatch, search_stores, validate_cart  # noqa: E402,F401
