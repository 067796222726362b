"""Stores, catalogue and inventory API (API.md, Stores, products, inventory)."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.orm import Session

from o2o.api import ApiRoute, CursorQuery, RowId, model_json
from o2o.db import INT4_MAX, DbSession, SessionRunner
from o2o.errors import error_responses
from o2o.users.dependencies import AdminUser
from stores import equivalents, inventory, service, slots
from stores.dependencies import StoreStaff, ValidStore
from stores.schemas import (
    PAGE_DEFAULT,
    PAGE_MAX,
    DeliverySlotsOut,
    EquivalentsOut,
    InventoryIn,
    InventorySyncOut,
    LotOut,
    Page,
    ProductIn,
    ProductOut,
    StoreImportIn,
    StoreImportOut,
    StoreIn,
    StoreOut,
    StoreUpdate,
)

router = APIRouter(route_class=ApiRoute, tags=["stores, catalogue and inventory"])

# `:int` keeps these paths from matching /stores/nearby and other words, whatever the order in
# which routers are included.
STORE_PATH = "/stores/{store_id:int}"
PRODUCT_PATH = "/products/{product_id:int}"

Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="Items per page")]
ProductPage = Page[ProductOut]


ADMIN = {"e401": "Not signed in", "e403": "Only admins may do this"}
STAFF = {"e401": "Not signed in", "e403": "not_store_staff: not staff of this store"}


@router.post(
    "/stores",
    status_code=status.HTTP_201_CREATED,
    response_model=StoreOut,
    summary="Register a store",
    responses=error_responses(
        **ADMIN,
        e422={
            "unknown_timezone": "",
            "empty_opening_interval": "",
            "overlapping_hours": "",
            "invalid_zone": "the reason is in details",
            "zone_required": "",
        },
    ),
)
def create_store(body: StoreIn, session: DbSession, admin: AdminUser):
    """Register a store with its location, timezone, hours, services and delivery zone."""
    return service.store_out(service.create_store(session, body))


@router.get(
    STORE_PATH,
    response_model=StoreOut,
    summary="Read a store",
    responses=error_responses(e404="store_not_found"),
)
def get_store(store: ValidStore):
    """Return a store, whether it is open now and, when closed, when it opens next."""
    return service.store_out(store)


@router.get(
    STORE_PATH + "/delivery-slots",
    response_model=DeliverySlotsOut,
    summary="List a store's open delivery slots",
    responses=error_responses(e404="store_not_found"),
)
def list_delivery_slots(store: ValidStore, session: DbSession):
    """List the store's scheduled delivery windows (today and tomorrow) that still have room."""
    return {
        "store_id": store.id,
        "timezone": store.timezone,
        "slots": [slot.as_dict() for slot in slots.open_slots(session, store)],
    }


@router.patch(
    STORE_PATH,
    response_model=StoreOut,
    summary="Change a store",
    responses=error_responses(
        **ADMIN,
        e404="store_not_found",
        e422=(
            "invalid_zone",
            "zone_required",
            "unknown_timezone",
            "empty_opening_interval",
            "overlapping_hours",
        ),
    ),
)
def update_store(store: ValidStore, body: StoreUpdate, session: DbSession, admin: AdminUser):
    """Change the fields sent; null clears opening_hours (always open) or delivery_zone."""
    return service.store_out(service.update_store(session, store, body))


@router.post(
    "/stores/import",
    response_model=StoreImportOut,
    summary="Import stores from GeoJSON",
    responses=error_responses(
        **ADMIN,
        e422={"invalid_features": "details.refused lists {index, reason}; nothing imported"},
    ),
)
def import_stores(
    body: StoreImportIn,
    session: DbSession,
    admin: AdminUser,
    partial: Annotated[
        bool, Query(description="Import the valid features and report the refused ones")
    ] = False,
):
    """Create a store per Feature (Point = location, properties = the store's fields).

    All or nothing by default; with `partial=true` the valid features are imported and the
    others listed in `refused`.
    """
    return service.import_stores(session, body, partial=partial)


@router.get(
    "/products",
    response_model=ProductPage,
    summary="Search the catalogue",
    responses=error_responses(e422=("invalid_cursor",)),
)
async def search_products(
    runner: SessionRunner,
    q: Annotated[
        str | None,
        Query(max_length=100, description="Part of a name or generic name, or GTIN digits"),
    ] = None,
    limit: Limit = PAGE_DEFAULT,
    cursor: CursorQuery = None,
) -> Response:
    """Find products by name or generic name (best match first) or by GTIN (prefix)."""
    # A hot read (a patient typing): run in the event loop on a session of the async engine, with
    # no hop to the thread pool, and its page serialized once.
    return await runner.run(_search_products, q, limit, cursor)


def _search_products(session: Session, q: str | None, limit: int, cursor: str | None) -> Response:
    items, next_cursor = service.search_products(session, q, limit=limit, cursor=cursor)
    return model_json(ProductPage.model_validate({"items": items, "next_cursor": next_cursor}))


@router.get(
    PRODUCT_PATH,
    response_model=ProductOut,
    summary="Read a product",
    responses=error_responses(e404="product_not_found"),
)
def get_product(product_id: RowId, session: DbSession):
    """Return a product."""
    return service.get_product(session, product_id)


@router.get(
    PRODUCT_PATH + "/equivalents",
    response_model=EquivalentsOut,
    summary="List a product's equivalents",
    responses=error_responses(e404="product_not_found"),
)
def list_equivalents(product_id: RowId, session: DbSession):
    """List the other products with the same generic name, strength, dosage form and route."""
    items = equivalents.equivalents_of(session, product_id)
    product = service.get_product(session, product_id)
    return {"product_id": product.id, "equivalence_key": product.equivalence_key, "items": items}


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductOut,
    summary="Add a product",
    responses=error_responses(**ADMIN, e409="gtin_taken", e422=("gtin_check_digit",)),
)
def create_product(body: ProductIn, session: DbSession, admin: AdminUser):
    """Add a product to the catalogue."""
    return service.create_product(session, body)


@router.put(
    f"{STORE_PATH}/inventory",
    response_model=InventorySyncOut,
    summary="Sync stock from the point of sale",
    responses=error_responses(
        **STAFF,
        e404="store_not_found",
        e409="below_reserved: details.lots lists the lots; nothing applied",
        e422={
            "repeated_lot": "",
            "unknown_products": "details.product_ids",
            "currency_mismatch": "",
        },
    ),
)
def sync_inventory(staff: StoreStaff, store: ValidStore, body: InventoryIn, session: DbSession):
    """Upsert lots by (product, lot number); `on_hand` sets the quantity.

    A `sync_id` applied before for this store returns `applied: false` and changes nothing.
    """
    return inventory.apply_inventory_sync(session, store, body)


@router.get(
    f"{STORE_PATH}/inventory",
    response_model=Page[LotOut],
    summary="List a store's lots",
    responses=error_responses(**STAFF, e404="store_not_found", e422=("invalid_cursor",)),
)
def list_inventory(
    staff: StoreStaff,
    store: ValidStore,
    session: DbSession,
    product_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    limit: Limit = PAGE_DEFAULT,
    cursor: CursorQuery = None,
):
    """List the store's lots with on hand, reserved, available, and whether each is sellable."""
    items, next_cursor = inventory.list_store_lots(
        session, store, product_id=product_id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}
