"""A point-of-sale count below what orders hold: the store's count is the truth, and the orders
give way by a stated rule.

The rule (`plan`, pure): on each short lot, the newest unpaid holds are cancelled first (their
stock goes back, their payment is called off); if that is not enough, the newest paid orders lose
their units of the lot and are flagged for the pharmacist (`orders.stock_short_at`), who moves
them to another lot (`reallocate`) or cancels them, which refunds them in full.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from o2o import clock, outbox
from o2o.errors import Conflict
from o2o.i18n import gettext
from o2o.order_flow import store_actions
from o2o.orders import lifecycle, states
from o2o.orders.models import LotAllocation, Order, OrderLine
from o2o.payments import service as payments_service
from stores import allocation
from stores import service as stores_service
from stores.models import Lot, Store


@dataclass(frozen=True)
class Hold:
    order_id: uuid.UUID
    quantity: int
    unpaid: bool
    placed_at: datetime


@dataclass(frozen=True)
class Plan:
    cancel: list[uuid.UUID]
    # (order id, units of the lot it loses)
    unallocate: list[tuple[uuid.UUID, int]]


def plan(shortfall: int, holds: Sequence[Hold]) -> Plan:
    """Say which holds give way to cover `shortfall` units of one lot: newest unpaid cancelled
    first, then newest paid lose units (only as many as needed)."""
    left = shortfall
    cancel: list[uuid.UUID] = []
    unallocate: list[tuple[uuid.UUID, int]] = []

    def newest_first(h: Hold):
        return (h.placed_at, str(h.order_id))

    for hold in sorted((h for h in holds if h.unpaid), key=newest_first, reverse=True):
        if left <= 0:
            break
        cancel.append(hold.order_id)
        left -= hold.quantity
    for hold in sorted((h for h in holds if not h.unpaid), key=newest_first, reverse=True):
        if left <= 0:
            break
        units = min(hold.quantity, left)
        unallocate.append((hold.order_id, units))
        left -= units
    return Plan(cancel, unallocate)


def _holds(session: Session, lot_id: int) -> list[Hold]:
    rows = session.execute(
        select(Order, LotAllocation.quantity)
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(LotAllocation, LotAllocation.order_line_id == OrderLine.id)
        .where(LotAllocation.lot_id == lot_id, Order.status.in_(states.OPEN_STATES))
    ).all()
    payments = payments_service.payments_of(session, [order.id for order, _ in rows])
    return [
        Hold(
            order.id,
            quantity,
            payments_service.is_unpaid_hold(order, payments.get(order.id)),
            order.created_at,
        )
        for order, quantity in rows
    ]


def resolve(session: Session, store_id: int, shortages: list[tuple[int, int]]) -> None:
    """Make orders give way on lots a sync counts below their reservations (subscribed to
    `stores.events.stock_below_reserved`; the lots are locked)."""
    now = clock.now()
    for lot_id, on_hand in sorted(shortages):
        lot = session.get(Lot, lot_id, populate_existing=True)
        shortfall = lot.reserved - on_hand
        if shortfall <= 0:
            continue
        decided = plan(shortfall, _holds(session, lot_id))
        for order_id in decided.cancel:
            order = lifecycle.lock_order(session, order_id)
            if order.status in states.OPEN_STATES:
                store_actions.cancel_order(
                    session,
                    order,
                    reason="The store's stock count came out lower than expected; this unpaid "
                    "order was released so the store's count stands.",
                    actor_id=None,
                )
        for order_id, units in decided.unallocate:
            _take_units(session, lifecycle.lock_order(session, order_id), lot_id, units, now)
        session.refresh(lot)


def _take_units(session: Session, order: Order, lot_id: int, units: int, now: datetime) -> None:
    """Take `units` of a lot away from a paid order and flag it for the pharmacist."""
    for line in order.lines:
        for held in list(line.allocations):
            if held.lot_id != lot_id or units <= 0:
                continue
            taken = min(held.quantity, units)
            allocation.release(session, [(lot_id, taken)])
            if taken == held.quantity:
                session.delete(held)
            else:
                held.quantity -= taken
            units -= taken
    order.stock_short_at = now
    session.flush()
    session.expire(order, ["lines"])
    outbox.emit(
        session,
        "order.stock_short",
        "order",
        order.id,
        {"order_id": str(order.id), "store_id": order.store_id, "at": now.isoformat()},
    )


class NothingToMove(Conflict):
    code = "order_not_short"


def missing_units(order: Order) -> list[tuple[int, int]]:
    """Return (product_id, units) an order's lines lack in allocations."""
    missing = []
    for line in order.lines:
        held = sum(a.quantity for a in line.allocations)
        if held < line.quantity:
            missing.append((line.product_id, line.quantity - held))
    return missing


def reallocate(session: Session, order: Order, *, actor_id: int) -> None:
    """Move a flagged order's missing units to other lots of its store (FEFO; 409
    insufficient_stock when the store has none) and clear the flag."""
    missing = missing_units(order)
    if order.stock_short_at is None or not missing:
        raise NothingToMove(gettext("This order is not short of stock."))
    store = session.get(Store, order.store_id)
    reserved = allocation.reserve_lines(
        session,
        store.id,
        [allocation.LineRequest(pid, qty) for pid, qty in missing],
        min_expiry=stores_service.min_sellable_expiry(store, clock.now()),
    )
    for line in order.lines:
        existing = {a.lot_id: a for a in line.allocations}
        for chosen in reserved.get(line.product_id, []):
            if chosen.lot_id in existing:
                existing[chosen.lot_id].quantity += chosen.quantity
            else:
                session.add(
                    LotAllocation(
                        order_line_id=line.id, lot_id=chosen.lot_id, quantity=chosen.quantity
                    )
                )
    order.stock_short_at = None
    session.flush()
    session.expire(order, ["lines"])
