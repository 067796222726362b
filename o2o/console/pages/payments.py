"""A store's day of money: online takings, counter takings, refunds, and what to collect at the
counter for pay-at-store pickups."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from o2o.api import ApiRoute
from o2o.console import queries
from o2o.console.auth import StaffUser, csrf_protect
from o2o.console.pages.common import StorePage, store_context
from o2o.console.rendering import render
from o2o.db import DbSession
from o2o.i18n import gettext as _
from o2o.payments import report

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


@router.get("/stores/{store_id}/payments", name="store_payments")
def store_payments(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    day: Annotated[date | None, Query()] = None,
) -> Response:
    """Show the store's day: takings online and at the counter, refunds, what to collect."""
    day = day or queries.store_today(store)
    return render(
        request,
        "payments.html",
        {
            **store_context(db, user, store, "payments"),
            "title": _("Payments · {store}").format(store=store.name),
            "day": day,
            "figures": report.store_day(db, store.id, day),
        },
    )
