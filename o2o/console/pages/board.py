"""The orders board: columns by state with SLA countdowns, prepare, ready and hand-over."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response

from o2o import clock
from o2o.api import ApiRoute
from o2o.config import get_settings
from o2o.console import queries
from o2o.console.auth import (
    StaffUser,
    csrf_protect,
)
from o2o.console.pages.common import StorePage, notice, redirect, store_context
from o2o.console.rendering import console_url, render
from o2o.db import DbSession
from o2o.errors import DomainError, NotFound
from o2o.i18n import gettext
from o2o.order_flow import access, store_actions, substitutions
from o2o.orders.models import Order
from o2o.users.models import User
from stores.models import Store

router = APIRouter(
    route_class=ApiRoute, dependencies=[Depends(csrf_protect)], include_in_schema=False
)


BOARD_REFRESH_SECONDS = 30


def countdown(deadline: datetime | None, now: datetime | None = None) -> str:
    """The countdown text the page starts with (JavaScript then updates it every second)."""
    if deadline is None:
        return ""
    seconds = int((deadline - (now or clock.now())).total_seconds())
    late = seconds < 0
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return (gettext("{time} overdue") if late else gettext("{time} left")).format(time=text)


def _board_context(db: DbSession, user: User, store: Store, **extra) -> dict:
    board = queries.orders_board(db, store)
    return {
        **store_context(db, user, store, "orders"),
        "title": gettext("Orders · {store}").format(store=store.name),
        "board": board,
        "pending_substitutions": substitutions.pending_at_store(db, store.id),
        "open_count": sum(len(orders) for _, _, orders in board.columns),
        "now": clock.now(),
        "countdown": countdown,
        "refresh_seconds": BOARD_REFRESH_SECONDS,
        "sla_minutes": get_settings().sla_minutes,
        **extra,
    }


@router.get("/stores/{store_id}/orders", name="orders_board")
def orders_board(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The store's orders by state, with SLA countdowns and the store-side actions."""
    return render(request, "orders.html", _board_context(db, user, store, notice=notice(done)))


@router.get("/stores/{store_id}/orders/board", name="orders_board_fragment")
def orders_board_fragment(
    request: Request, db: DbSession, user: StaffUser, store: StorePage
) -> Response:
    """Just the board, for the periodic htmx refresh."""
    return render(request, "_board.html", _board_context(db, user, store))


def _staff_order(db: DbSession, user: User, store: Store, order_id: str) -> Order:
    """Lock one of this store's orders for a store action (the orders service checks staff)."""
    order = access.get_order_for_staff(db, user, queries.parse_uuid(order_id))
    if order.store_id != store.id:
        raise NotFound(gettext("No such order at this store."), code="order_not_found")
    return order


def _board_refusal(
    request: Request, db: DbSession, user: User, store: Store, exc: DomainError, **extra
) -> Response:
    # A refused hand-over is shown at its code field only (one alert, where the user looks).
    banner = None if "handover_errors" in extra else exc.message
    return render(
        request,
        "orders.html",
        _board_context(db, user, store, error=banner, **extra),
        status_code=exc.status_code,
    )


def _after_action(request: Request, store: Store, done: str, order_id: str) -> Response:
    url = console_url(request, "orders_board", store_id=store.id)
    return redirect(f"{url}?done={done}#order-{order_id}")


@router.post("/stores/{store_id}/orders/{order_id}/prepare", name="order_prepare")
def order_prepare(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, order_id: str
) -> Response:
    """Start preparing a released order."""
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.prepare(db, order, actor_id=user.id)
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "preparing", order_id)


@router.post("/stores/{store_id}/orders/{order_id}/ready", name="order_ready")
def order_ready(
    request: Request, db: DbSession, user: StaffUser, store: StorePage, order_id: str
) -> Response:
    """Mark a prepared order ready (a delivery goes to the couriers)."""
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.mark_ready(db, order, actor_id=user.id)
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "ready", order_id)


@router.post("/stores/{store_id}/orders/{order_id}/handover", name="order_handover")
def order_handover(
    request: Request,
    db: DbSession,
    user: StaffUser,
    store: StorePage,
    order_id: str,
    pickup_code: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Hand a ready pickup over to the patient who shows the pickup code."""
    if not pickup_code.strip():
        # An empty submission is not a guess: it does not use up one of the patient's tries.
        return render(
            request,
            "orders.html",
            _board_context(
                db,
                user,
                store,
                handover_errors={order_id: gettext("Enter the patient's pickup code.")},
            ),
            status_code=422,
        )
    try:
        order = _staff_order(db, user, store, order_id)
        store_actions.handover(db, order, pickup_code.strip(), actor_id=user.id)
    except (store_actions.WrongPickupCode, store_actions.PickupCodeLocked) as exc:
        if isinstance(exc, store_actions.WrongPickupCode):
            # The failed try counts although the answer is a refusal (as in the API).
            db.commit()
        else:
            db.rollback()
        return _board_refusal(
            request,
            db,
            user,
            store,
            exc,
            handover_errors={str(order.id): exc.message},
        )
    except DomainError as exc:
        db.rollback()
        return _board_refusal(request, db, user, store, exc)
    return _after_action(request, store, "handed_over", order_id)
