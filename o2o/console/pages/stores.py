"""Store pages: the list of a staff member's stores, switching store, and inventory."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from o2o.api import ApiRoute
from o2o.console import queries
from o2o.console.auth import (
    StaffUser,
    check_store,
    csrf_protect,
)
from o2o.console.pages.common import StorePage, redirect, staff_stores, store_context
from o2o.console.rendering import console_url, render
from o2o.db import INT4_MAX, DbSession
from o2o.i18n import gettext as _
from o2o.users.models import Role
from stores import service as stores_service
from stores.models import Store

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


@router.get("/stores", name="store_list")
def store_list(
    request: Request,
    db: DbSession,
    user: StaffUser,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """List the stores this user works at (an admin searches all stores)."""
    if user.role is Role.ADMIN:
        stmt = select(Store).order_by(Store.name).limit(100)
        if q:
            stmt = stmt.where(Store.name.ilike(stores_service.like_pattern(q), escape="\\"))
        stores = list(db.scalars(stmt))
    else:
        stores = staff_stores(db, user)
    return render(request, "stores.html", {"stores": stores, "q": q, "title": _("Your stores")})


SECTIONS = {
    "prescriptions": "prescription_queue",
    "orders": "orders_board",
    "inventory": "inventory",
    "sla": "sla_page",
    "payments": "store_payments",
}


@router.get("/switch-store", name="switch_store")
def switch_store(
    request: Request,
    user: StaffUser,
    store_id: Annotated[int, Query(ge=1, le=INT4_MAX)],
    section: Annotated[str, Query(max_length=20)] = "orders",
) -> Response:
    """Jump to the same section of another of the user's stores."""
    check_store(user, store_id)
    route = SECTIONS.get(section, "orders_board")
    return redirect(console_url(request, route, store_id=store_id))


LOW_STOCK_DEFAULT = 10


@router.get("/stores/{store_id}/inventory", name="inventory")
def inventory(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    q: Annotated[str | None, Query(max_length=100)] = None,
    low: Annotated[int, Query(ge=0, le=100_000)] = LOW_STOCK_DEFAULT,
    days: Annotated[int | None, Query(ge=1, le=3650)] = None,
) -> Response:
    """Low stock, lots expiring soon, and a product search with this store's numbers."""
    # By default look a month past the point where lots stop being sold online.
    within_days = days or store.min_shelf_life_days + 30
    q = (q or "").strip()
    return render(
        request,
        "inventory.html",
        {
            **store_context(db, user, store, "inventory"),
            "title": _("Inventory · {store}").format(store=store.name),
            "q": q,
            "results": queries.search_stock(db, store, q) if q else None,
            "low": low,
            "low_stock": queries.low_stock(db, store, low),
            "within_days": within_days,
            "expiring": queries.expiring_lots(db, store, within_days),
            "today": queries.store_today(store),
        },
    )
