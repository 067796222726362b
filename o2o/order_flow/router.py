"""Orders API: place (idempotent), list, read, cancel; the store's prepare, ready and handover."""

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from o2o import idempotency, ratelimit
from o2o.api import ApiRoute, CursorQuery, model_json
from o2o.config import get_settings
from o2o.db import INT4_MAX, DbSession, DriverLender, LendDriver, SessionRunner, WriterRunner
from o2o.errors import DomainError, error_body, error_responses
from o2o.i18n import gettext as _
from o2o.order_flow import (
    access,
    dispense,
    shortfall,
    split_checkout,
    store_actions,
    views,
)
from o2o.order_flow.schemas import (
    CancelIn,
    HandoverIn,
    OrderIn,
    OrderOut,
    OrderPage,
    SplitOrderOut,
)
from o2o.orders.models import OrderStatus
from o2o.users.dependencies import (
    AsyncCurrentUser,
    CurrentUser,
    WritingPatientUser,
    require_role,
)
from o2o.users.models import Role, User

log = logging.getLogger(__name__)
router = APIRouter(route_class=ApiRoute, tags=["orders"])

StaffUser = Annotated[User, Depends(require_role(Role.PHARMACIST, Role.ADMIN))]
SplitReader = Annotated[User, Depends(require_role(Role.PATIENT, Role.ADMIN))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A client-chosen unique key; a retry with the same key and body returns "
        "the first response instead of placing a second order.",
    ),
]

ORDERS_PATH = "/orders"


@router.post(
    ORDERS_PATH,
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut | SplitOrderOut,
    responses=error_responses(
        e409="insufficient_stock, delivery_unavailable (details: earliest_slot), "
        "delivery_slot_full (details: earliest_slot), store_closed, too_many_open_orders "
        "(unpaid orders at the cap), too_many_open_units (units of a product on open orders at "
        "the cap), payments_unavailable (no payment app: pay at the store), ...",
        e422=(
            "unknown_product",
            "controlled_product",
            "idempotency_key_reused",
            "unknown_store",
            "max_per_order_exceeded",
            "invalid_quantity",
            "invalid_delivery_slot",
            "invalid_split",
            "invalid_pickup_point",
            "unknown_pickup_point",
        ),
        e429="rate_limited: too many orders from this patient (Retry-After)",
    ),
)
async def place_order(
    body: OrderIn,
    runner: WriterRunner,
    lend: DriverLender,
    patient: WritingPatientUser,
    idempotency_key: IdempotencyKey = None,
):
    """Place an order: choose the store and pickup or delivery, and reserve every item (with
    allow_split, a cart no single store holds is placed in parts at the fewest stores)."""
    await ratelimit.hit_async(
        ratelimit.limit(get_settings().order_rate_limit),
        "orders-patient",
        str(patient.id),
        message=_("Too many orders in a short time; wait a minute and try again."),
    )
    outcome = None
    if idempotency_key is not None:
        fingerprint = idempotency.request_hash(
            "POST", ORDERS_PATH, body.model_dump(mode="json", exclude_unset=False)
        )
        # The claim is committed by its one statement, on a driver connection lent for it (as
        # the patient was read): the placement's session has not opened yet, so the request
        # never holds two connections at once, and its transaction starts with the work.
        async with lend() as conn:
            outcome = await idempotency.claim(
                conn, user_id=patient.id, key=idempotency_key, request_hash=fingerprint
            )
        if isinstance(outcome, idempotency.Replay):
            return _replay(outcome)
    # The placement runs in the event loop on the request's one async session (of the writers'
    # pool): no hop to a worker thread for the session, the work and the answer, each of which
    # would contend for the interpreter with every other placement in flight.
    try:
        return await runner.run(_place_order, patient, body, outcome)
    except BaseException as exc:
        if outcome is not None and not _refusal(exc):
            await _give_back(lend, outcome)
        raise


def _place_order(session: Session, patient: User, body: OrderIn, outcome: idempotency.Claim | None):
    if outcome is None:
        payload = split_checkout.place_and_present(session, patient, body)
        return JSONResponse(payload, status_code=status.HTTP_201_CREATED)

    def record(payload: dict) -> None:
        if not idempotency.finish(session, outcome, status.HTTP_201_CREATED, payload):
            raise idempotency.RequestInFlight(
                _("A retry of this request took over its Idempotency-Key; use that answer."),
            )

    try:
        # Committed by the placement, the answer with the order (`record`), or neither.
        payload = split_checkout.place_and_present(session, patient, body, record=record)
    except BaseException as exc:
        # Rolled back first: the key's row may be locked by the answer's UPDATE.
        session.rollback()
        if _refusal(exc):
            # A refusal is an answer too: the retry gets the same one (the work rolled back).
            try:
                idempotency.finish(
                    session,
                    outcome,
                    exc.status_code,
                    error_body(exc.code, exc.message, exc.details),
                )
                session.commit()
            except BaseException:
                # Not recorded: rolled back before the key is given back, which its row's lock
                # would otherwise hold up.
                session.rollback()
                raise
        raise
    return JSONResponse(payload, status_code=status.HTTP_201_CREATED)


def _refusal(exc: BaseException) -> bool:
    """Whether a placement's failure is a refusal its key answers (4xx), not one that frees it."""
    return (
        isinstance(exc, DomainError)
        and 400 <= exc.status_code < 500
        and not isinstance(exc, idempotency.RequestInFlight)
    )


async def _give_back(lend: LendDriver, claim: idempotency.Claim) -> None:
    """Free the key after a failure that is not a refusal, so a retry runs the request again,
    keeping that failure the one reported."""
    try:
        async with lend() as conn:
            await idempotency.abandon(conn, claim)
    except Exception:
        # The database is what failed: the claim goes stale and a retry takes it over.
        log.exception("could not free Idempotency-Key after a failure")


def _replay(replay: idempotency.Replay):
    headers = {"Idempotency-Replayed": "true"}
    if replay.status >= 400:
        error = (replay.body or {}).get("error", {})
        raise DomainError(
            error.get("message", ""),
            code=error.get("code"),
            status_code=replay.status,
            details=error.get("details"),
            headers=headers,
        )
    return JSONResponse(replay.body, status_code=replay.status, headers=headers)


@router.get(
    ORDERS_PATH,
    response_model=OrderPage,
    responses=error_responses(
        e403="forbidden: couriers and doctors have no order list; not_store_staff",
        e404="store_not_found",
    ),
)
async def list_orders(
    runner: SessionRunner,
    user: AsyncCurrentUser,
    store_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    status_: Annotated[OrderStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorQuery = None,
):
    """List my orders (patient), or a store's orders (its staff: `?store_id=`), newest first."""
    return await runner.run(_list_orders, user, store_id, status_, limit, cursor)


def _list_orders(session: Session, user: User, store_id, status_, limit, cursor):
    orders, next_cursor = views.list_orders(
        session, user, store_id=store_id, status=status_, limit=limit, cursor=cursor
    )
    page = OrderPage(items=views.present_many(session, orders, user), next_cursor=next_cursor)
    return model_json(page)


@router.get(
    "/split-orders/{split_order_id}",
    response_model=SplitOrderOut,
    responses=error_responses(
        e403="forbidden: only its patient (and an admin) read a split order; each part is an "
        "order at /orders/{id}",
        e404="order_not_found",
    ),
)
def get_split_order(split_order_id: uuid.UUID, session: DbSession, user: SplitReader):
    """Read a split order: its parts (each an order of its own), the derived status, the one
    payment and its refunds."""
    split = access.get_split_order(session, user, split_order_id)
    return split_checkout.present_split(session, split, user)


@router.get(
    ORDERS_PATH + "/{order_id}",
    response_model=OrderOut,
    responses=error_responses(e403="forbidden: couriers and doctors do not read orders here"),
)
async def get_order(order_id: uuid.UUID, runner: SessionRunner, user: AsyncCurrentUser):
    """Read one order with its timeline (for its store's staff, with the allergy and interaction
    warnings under `safety`)."""
    return await runner.run(_get_order, user, order_id)


def _get_order(session: Session, user: User, order_id: uuid.UUID):
    order = access.get_order(session, user, order_id)
    staff = access.is_store_staff_for(user, order)
    return model_json(views.present(session, order, user, with_safety=staff))


@router.get(
    ORDERS_PATH + "/{order_id}/fhir/dispense",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/fhir+json": {}}},
        **error_responses(
            e403="forbidden: couriers and doctors do not read orders here",
            e409="order_not_completed: nothing has been handed over yet",
        ),
    },
)
def get_dispense_record(
    order_id: uuid.UUID,
    session: DbSession,
    user: CurrentUser,
    all_lines: Annotated[
        bool,
        Query(description="Every line, not only the prescription items (the default)."),
    ] = False,
):
    """What was handed over, as a FHIR R4 Bundle of MedicationDispense (one per lot of a line)."""
    order = access.get_order(session, user, order_id)
    bundle = dispense.dispense_bundle(session, order, all_lines=all_lines)
    return JSONResponse(bundle, media_type="application/fhir+json")


@router.post(
    ORDERS_PATH + "/{order_id}/cancel",
    response_model=OrderOut,
    responses=error_responses(
        e403="forbidden: couriers and doctors do not cancel orders",
        e409="the order can no longer be cancelled",
    ),
)
def cancel_order(order_id: uuid.UUID, body: CancelIn, session: DbSession, user: CurrentUser):
    """Cancel an order (its patient until the courier has it, or the store's staff)."""
    order = access.get_order(session, user, order_id, lock=True)
    store_actions.cancel_by(session, user, order, body.reason)
    return views.present(session, order, user)


@router.post(
    ORDERS_PATH + "/{order_id}/prepare",
    response_model=OrderOut,
    responses=error_responses(e409="illegal_transition, order_stock_short"),
)
def prepare_order(order_id: uuid.UUID, session: DbSession, staff: StaffUser):
    """Start preparing a released order (the store's staff)."""
    order = access.get_order_for_staff(session, staff, order_id)
    store_actions.prepare(session, order, actor_id=staff.id)
    return views.present(session, order, staff)


@router.post(
    ORDERS_PATH + "/{order_id}/ready",
    response_model=OrderOut,
    responses=error_responses(e409="illegal_transition, order_stock_short"),
)
def ready_order(order_id: uuid.UUID, session: DbSession, staff: StaffUser):
    """Mark an order ready: a pickup waits for its patient, a delivery goes to the couriers."""
    order = access.get_order_for_staff(session, staff, order_id)
    store_actions.mark_ready(session, order, actor_id=staff.id)
    return views.present(session, order, staff)


@router.post(
    ORDERS_PATH + "/{order_id}/reallocate",
    response_model=OrderOut,
    responses=error_responses(
        e409="order_not_short (nothing to move), insufficient_stock (no other lot has it)"
    ),
)
def reallocate_order(order_id: uuid.UUID, session: DbSession, staff: StaffUser):
    """Move an order a store count left short to other lots of the store (the store's staff)."""
    order = access.get_order_for_staff(session, staff, order_id)
    shortfall.reallocate(session, order, actor_id=staff.id)
    return views.present(session, order, staff)


@router.post(
    ORDERS_PATH + "/{order_id}/handover",
    response_model=OrderOut,
    responses=error_responses(
        e409="illegal_transition, pickup_code_locked, order_stock_short, payment_not_collected (a pay-at-store "
        "order: confirm payment_collected)",
        e422=("wrong_pickup_code",),
    ),
)
def handover_order(order_id: uuid.UUID, body: HandoverIn, session: DbSession, staff: StaffUser):
    """Hand a ready pickup to the patient who shows the pickup code."""
    order = access.get_order_for_staff(session, staff, order_id)
    try:
        store_actions.handover(
            session,
            order,
            body.pickup_code,
            actor_id=staff.id,
            payment_collected=body.payment_collected,
        )
    except store_actions.WrongPickupCode:
        # The failed try must count although the answer is an error: keep it, then refuse.
        session.commit()
        raise
    return views.present(session, order, staff)
