"""Stock analytics API: a store's ABC analysis and turnover (its staff and admins)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from o2o.analytics import service
from o2o.analytics.schemas import AbcReportOut, TurnoverReportOut
from o2o.api import ApiRoute, RowId
from o2o.config import get_settings
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.users.dependencies import require_role
from o2o.users.models import Role, User

router = APIRouter(route_class=ApiRoute, tags=["analytics"])

StaffOrAdmin = Annotated[User, Depends(require_role(Role.PHARMACIST, Role.ADMIN))]
DEFAULT_DAYS = 90
Days = Annotated[int, Query(ge=1, le=get_settings().analytics_max_days)]


@router.get(
    "/stores/{store_id}/analytics/abc",
    response_model=AbcReportOut,
    response_model_by_alias=True,
    responses=error_responses(e404="store_not_found (or not your store)"),
)
def abc_analysis(
    store_id: RowId, session: DbSession, user: StaffOrAdmin, days: Days = DEFAULT_DAYS
):
    """Class each product A, B or C by its share of the store's sales value over the last `days`
    local days, with units, days of stock at the period's rate and the value near expiry."""
    store = service.check_access(session, user, store_id)
    return service.abc_report(session, store, days)


@router.get(
    "/stores/{store_id}/analytics/turnover",
    response_model=TurnoverReportOut,
    response_model_by_alias=True,
    responses=error_responses(e404="store_not_found (or not your store)"),
)
def turnover(store_id: RowId, session: DbSession, user: StaffOrAdmin, days: Days = DEFAULT_DAYS):
    """The store's stock turnover over the last `days` local days, its days of stock, and its
    dead stock (on hand, nothing sold in the period)."""
    store = service.check_access(session, user, store_id)
    return service.turnover_report(session, store, days)
