"""The pickup point's counter: the leader's parcels and expected runs, the hand-over to the patient
against the pickup code, and the leader's commission statement.

Who may: the point's leader (a user with the role leader, or a pharmacist of a partner shop) and
admins. Another leader or pharmacist gets 404 (the point is not theirs to see); a patient, doctor
or courier gets 403 (their role never stands behind a point's counter).
"""

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from dispatch import point_parcels
from o2o import clock
from o2o.api import ApiRoute, RowId
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.payments import commissions
from o2o.users.dependencies import require_role
from o2o.users.models import Role, User
from stores import pickup_points
from stores.models import Store
from stores.pickup_points import PickupPoint

router = APIRouter(route_class=ApiRoute, tags=["community pickup points"])

CounterUser = Annotated[User, Depends(require_role(Role.LEADER, Role.PHARMACIST, Role.ADMIN))]
POINT_PATH = "/pickup-points/{point_id:int}"
NOT_YOURS = {"e404": "pickup_point_not_found (none, or not yours)"}


def _my_point(session, user: User, point_id: int) -> PickupPoint:
    point = pickup_points.get_point(session, point_id)
    if not pickup_points.may_hand_over(user, point):
        raise pickup_points.point_not_found()
    return point


class ParcelOut(BaseModel):
    order_id: uuid.UUID
    arrived_at: datetime
    # Not collected by then, the parcel goes back to the store and the order is refunded.
    hold_expires_at: datetime
    code_tries_left: int


class ParcelsOut(BaseModel):
    items: list[ParcelOut]
    next_cursor: str | None = None


class PointRunOut(BaseModel):
    id: uuid.UUID
    departs_at: datetime
    arrives_at: datetime
    status: str
    arrived_at: datetime | None
    # The courier asks for it at the point: it proves the run was handed to the leader.
    handoff_code: str
    parcels: int


class RunsOut(BaseModel):
    items: list[PointRunOut]
    next_cursor: str | None = None


class PointHandoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: uuid.UUID
    pickup_code: str = Field(
        pattern=r"^([0-9]{6}|O2O-PICKUP:[0-9a-fA-F-]{36}:[0-9]{6})$",
        description="The 6-digit code the patient shows, or the scanned `pickup_qr` payload.",
    )


class PointHandoverOut(BaseModel):
    order_id: uuid.UUID
    status: str
    completed_at: datetime


class StatementItem(BaseModel):
    order_id: uuid.UUID
    completed_at: datetime
    goods_minor: int
    rate_bp: int
    commission_minor: int
    currency: str


class StatementTotal(BaseModel):
    currency: str
    orders: int
    goods_minor: int
    commission_minor: int


class StatementOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    pickup_point_id: int
    leader_user_id: int | None
    commission_rate_bp: int
    from_: date = Field(alias="from")
    to: date
    items: list[StatementItem]
    total: list[StatementTotal]


@router.get(
    POINT_PATH + "/parcels",
    response_model=ParcelsOut,
    summary="List the parcels waiting at the point",
    responses=error_responses(**NOT_YOURS),
)
def list_parcels(point_id: RowId, session: DbSession, user: CounterUser):
    """List the parcels waiting at the point for their patients (the point's leader, admins)."""
    point = _my_point(session, user, point_id)
    return {"items": point_parcels.parcels_at(session, point)}


@router.get(
    POINT_PATH + "/runs",
    response_model=RunsOut,
    summary="List the store's runs to the point",
    responses=error_responses(**NOT_YOURS),
)
def list_runs(point_id: RowId, session: DbSession, user: CounterUser):
    """List today's and later runs to the point with the hand-off code the courier asks for."""
    point = _my_point(session, user, point_id)
    store = session.get(Store, point.store_id)
    now = clock.now()
    today = clock.today(store.timezone, at=now)
    since = pickup_points.local_midnight(today, store.timezone)
    return {"items": point_parcels.runs_to(session, point, since=since)}


@router.post(
    POINT_PATH + "/handover",
    response_model=PointHandoverOut,
    summary="Hand a parcel to its patient",
    responses=error_responses(
        e404="pickup_point_not_found (none, or not yours), parcel_not_found (not waiting here)",
        e409="parcel_collected, pickup_code_locked",
        e422=("wrong_pickup_code",),
    ),
)
def hand_over_parcel(point_id: RowId, body: PointHandoverIn, session: DbSession, user: CounterUser):
    """Hand a parcel waiting at the point to the patient who shows its pickup code."""
    point = _my_point(session, user, point_id)
    try:
        order = point_parcels.hand_over(
            session, point, body.order_id, body.pickup_code, actor_id=user.id
        )
    except point_parcels.WrongPickupCode:
        # The failed try must count although the answer is an error: keep it, then refuse.
        session.commit()
        raise
    return {"order_id": order.id, "status": order.status.value, "completed_at": order.completed_at}


@router.get(
    POINT_PATH + "/statement",
    response_model=StatementOut,
    response_model_by_alias=True,
    summary="The leader's commission statement",
    responses=error_responses(**NOT_YOURS, e422=("invalid_range", "range_too_long")),
)
def leader_statement(
    point_id: RowId,
    session: DbSession,
    user: CounterUser,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
):
    """Return the commissions the point earned, per completed order, in [from, to] (the store's
    local days; default: the last 30 days to today)."""
    point = _my_point(session, user, point_id)
    store = session.get(Store, point.store_id)
    today = clock.today(store.timezone)
    to = to or today
    from_ = from_ or to - timedelta(days=29)
    return commissions.statement(session, point, from_day=from_, to_day=to)
