"""Lot allocation: the pure FEFO choice, and the locked reserve / move / release / commit of stock.

The decision (`choose_lots`) is plain code over plain values. A reservation takes its lots with one
conditional UPDATE each (see `reserve_lines`); the other writers lock the lots they touch
`FOR UPDATE` in id order, so two orders that need the same lots always queue in the same order and
can never deadlock, and no second transaction can read a quantity this one is about to change.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace

import psycopg
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from o2o.db import commit_after
from o2o.errors import Conflict
from stores.cart import CartLine
from stores.models import Lot


@dataclass(frozen=True)
class LotStock:
    """What the allocator needs to know about one lot."""

    lot_id: int
    expiry_date: date
    available: int  # on_hand - reserved
    price_minor: int = 0


@dataclass(frozen=True)
class Allocation:
    lot_id: int
    quantity: int
    price_minor: int = 0


@dataclass(frozen=True)
class Shortage:
    product_id: int
    quantity_missing: int


# A line to reserve is a cart line: (product_id, quantity).
LineRequest = CartLine


class InsufficientStock(Conflict):
    """Not enough usable stock for one or more lines; every shortage is listed."""

    code = "insufficient_stock"

    def __init__(
        self,
        shortages: Sequence[Shortage],
        message: str | None = None,
        *,
        names: Mapping[int, str] | None = None,
    ) -> None:
        names = names or {}
        ordered = sorted(shortages, key=lambda s: s.product_id)
        missing = []
        for s in ordered:
            entry = {"product_id": s.product_id, "quantity_missing": s.quantity_missing}
            if s.product_id in names:
                entry["name"] = names[s.product_id]
            missing.append(entry)
        # Name each item the way the patient saw it in the catalogue, when the caller knows it.
        listed = ", ".join(
            f"{names.get(s.product_id, f'product {s.product_id}')} ({s.quantity_missing} short)"
            for s in ordered
        )
        if message is None:
            text = f"Not enough stock for {listed}; nothing was reserved."
        elif names:
            text = f"{message} Not enough: {listed}."
        else:
            text = message
        super().__init__(text, details={"missing": missing})
        self.shortages = list(shortages)
        self._given_message = message

    def naming(self, names: Mapping[int, str]) -> "InsufficientStock":
        """Return the same refusal with the items named (product id -> name)."""
        return InsufficientStock(self.shortages, self._given_message, names=names)


def choose_lots(
    lots: Iterable[LotStock], quantity: int, *, min_expiry: date, all_or_nothing: bool = False
) -> list[Allocation]:
    """Pick lots first-expiry-first-out for `quantity` units, skipping lots expiring before
    `min_expiry`; return fewer units than asked when stock is short (the caller decides), or
    none at all with `all_or_nothing`."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    usable = sorted(
        (lot for lot in lots if lot.expiry_date >= min_expiry and lot.available > 0),
        # Same expiry: the lower id (older row) first, so the choice is deterministic.
        key=lambda lot: (lot.expiry_date, lot.lot_id),
    )
    chosen: list[Allocation] = []
    remaining = quantity
    for lot in usable:
        if remaining == 0:
            break
        take = min(lot.available, remaining)
        chosen.append(Allocation(lot.lot_id, take, lot.price_minor))
        remaining -= take
    if all_or_nothing and remaining:
        return []
    return chosen


def allocated(allocations: Iterable[Allocation]) -> int:
    return sum(a.quantity for a in allocations)


def _plan(
    lots: Iterable, lines: Sequence[LineRequest], min_expiry: date, per_product_min: Mapping
) -> tuple[dict[int, list[Allocation]], list[Shortage]]:
    """Choose lots FEFO for every line from (id, product_id, expiry_date, available, price)."""
    by_product: dict[int, list[LotStock]] = {}
    for lot in lots:
        by_product.setdefault(lot.product_id, []).append(
            LotStock(lot.id, lot.expiry_date, lot.available, lot.price_minor)
        )
    result: dict[int, list[Allocation]] = {}
    shortages: list[Shortage] = []
    for line in lines:
        chosen = choose_lots(
            by_product.get(line.product_id, []),
            line.quantity,
            min_expiry=per_product_min.get(line.product_id, min_expiry),
        )
        got = allocated(chosen)
        if got < line.quantity:
            shortages.append(Shortage(line.product_id, line.quantity - got))
        result[line.product_id] = chosen
    return result, shortages


# Takes the units only if they are still there, or fails the statement (SQLSTATE
# STOCK_MOVED_SQLSTATE, the lot's id as the error's detail): `take_lot`, a function of the
# database (migration 0026), so a COMMIT sent behind a failed take commits nothing. The row lock
# lasts from here to the commit, and nothing is read under it. One statement for a session
# (`_take`) and for the driver's pipeline (`StockLast.take_and_commit`).
_TAKE = "SELECT take_lot(CAST({} AS bigint), CAST({} AS integer), CAST({} AS date))"
_TAKE_SQL = text(_TAKE.format(":id", ":q", ":min_expiry"))
_TAKE_OR_FAIL = _TAKE.format("%s", "%s", "%s")
STOCK_MOVED_SQLSTATE = "O2S01"
# A miss must let go of every lot it touched before the locked path locks them in id order:
# PostgreSQL keeps the lock of a row an UPDATE waited for even when the row then no longer
# matched. Rolling back to this savepoint releases them (it stays open until the commit, which
# releases it: one statement more per reservation, not two).
_SAVEPOINT = "o2o_reserve"


def _moved_lot(error: psycopg.Error) -> int | None:
    """The lot a refused take names; None for any other error."""
    if error.sqlstate != STOCK_MOVED_SQLSTATE:
        return None
    return int(error.diag.message_detail)


def _take_one(session: Session, lot_id: int, quantity: int, floor: date) -> bool:
    try:
        session.execute(_TAKE_SQL, {"id": lot_id, "q": quantity, "min_expiry": floor})
    except DBAPIError as exc:
        if not isinstance(exc.orig, psycopg.Error) or _moved_lot(exc.orig) is None:
            raise
        return False
    return True


def _forget_reserved(session: Session, lot_ids: Iterable[int]) -> None:
    """Lot objects this session already holds would show the reserved count from before."""
    ids = set(lot_ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Lot) and obj.id in ids:
            session.expire(obj, ["reserved"])


def _steps(plan: Mapping[int, list[Allocation]], floors: Mapping[int, date]):
    return [
        (a.lot_id, a.quantity, floors[product_id])
        for product_id, chosen in plan.items()
        for a in chosen
    ]


def _take(session: Session, plan: dict[int, list[Allocation]], min_expiry: Mapping) -> bool:
    """Reserve the planned units lot by lot in id order; undo all and return False on a miss."""
    steps = sorted(_steps(plan, min_expiry))
    session.execute(text(f"SAVEPOINT {_SAVEPOINT}"))
    for lot_id, quantity, floor in steps:
        if not _take_one(session, lot_id, quantity, floor):
            session.execute(text(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}"))
            return False
    _forget_reserved(session, (lot_id for lot_id, _, _ in steps))
    return True


@dataclass(frozen=True)
class Planned:
    """The lots chosen for one store's lines from an unlocked read: nothing is reserved yet."""

    store_id: int
    plan: dict[int, list[Allocation]]  # product_id -> allocations, FEFO
    floors: dict[int, date]  # product_id -> the expiry a lot must reach on the day


class StockMoved(Exception):
    """Another order took planned units first: the caller rolls back and reserves under lock."""


# The lots a plan chooses from, built once (building a statement and its cache key on every
# placement cost about as much as running it); _LOTS_SHARED also takes their key-share locks.
_LOTS = (
    select(
        Lot.id,
        Lot.product_id,
        Lot.expiry_date,
        (Lot.on_hand - Lot.reserved).label("available"),
        Lot.price_minor,
    )
    .where(
        Lot.store_id == bindparam("store_id"),
        Lot.product_id.in_(bindparam("product_ids", expanding=True)),
        Lot.expiry_date >= bindparam("floor"),
    )
    .order_by(Lot.id)
)
_LOTS_SHARED = _LOTS.with_for_update(read=True, key_share=True)


def plan_lines(
    session: Session,
    store_id: int,
    lines: Sequence[LineRequest],
    *,
    min_expiry: date,
    min_expiry_by_product: Mapping[int, date] | None = None,
    key_share: bool = False,
) -> Planned:
    """Choose the lots for every line at one store FEFO from an unlocked read, all or nothing:
    raise InsufficientStock listing every shortage. No lot's stock is locked or changed;
    `key_share` takes the lots' key-share locks in the same read (see StockLast)."""
    per_product_min = dict(min_expiry_by_product or {})
    product_ids = sorted({line.product_id for line in lines})
    floor = min([min_expiry, *per_product_min.values()])
    lots = session.execute(
        _LOTS_SHARED if key_share else _LOTS,
        {"store_id": store_id, "product_ids": product_ids, "floor": floor},
    ).all()
    plan, shortages = _plan(lots, lines, min_expiry, per_product_min)
    if shortages:
        raise InsufficientStock(shortages)
    floors = {line.product_id: per_product_min.get(line.product_id, min_expiry) for line in lines}
    return Planned(store_id, plan, floors)


def _ordered_steps(planned: Iterable[Planned]) -> list[tuple[int, int, int, date]]:
    """(store, lot, units, expiry floor) of every planned take: stores in id order, lots in id
    order within each."""
    return sorted(
        (p.store_id, lot_id, quantity, floor)
        for p in planned
        for lot_id, quantity, floor in _steps(p.plan, p.floors)
    )


# How a placement reserves one store's lines: `reserve_lines` (taken at once) or a `StockLast`.
Reserve = Callable[..., dict[int, list[Allocation]]]


class StockLast:
    """Reserve as `reserve_lines` does, but plan now and take at the end (`take_and_commit`):
    the work between needs no lock on the lots' stock, so buyers of one hot product queue only
    for the UPDATEs and the commit, sent together. A placement passes one of these down and
    ends its transaction with `take_and_commit`."""

    def __init__(self) -> None:
        self.planned: list[Planned] = []

    def __call__(
        self,
        session: Session,
        store_id: int,
        lines: Sequence[LineRequest],
        *,
        min_expiry: date,
    ) -> dict[int, list[Allocation]]:
        # The key-share locks an order's allocation rows take on their lots (the foreign key's
        # check) are taken by the planning read, in id order: the checks would take them in the
        # order the rows are inserted, and a writer locking the same lots FOR UPDATE in id order
        # meanwhile could deadlock with them. A key-share lock does not block other buyers'
        # UPDATEs of the lot, only those FOR UPDATE.
        planned = plan_lines(session, store_id, lines, min_expiry=min_expiry, key_share=True)
        self.planned.append(planned)
        return planned.plan

    def take_and_commit(self, session: Session) -> None:
        """Take every planned lot as the transaction's last statements and commit, in one round
        trip (`o2o.db.commit_after`): one conditional UPDATE per lot, stores in id order and
        lots in id order within each (the order the locked paths share, so nothing deadlocks),
        so the lots' row locks are held for the server's time alone.

        Raise StockMoved when a lot no longer has the units: nothing is committed, and the
        caller must roll back the whole transaction (which lets go of every lot this one
        touched) and redo its work with `reserve_lines`, which chooses again under lock."""
        steps = _ordered_steps(self.planned)
        try:
            commit_after(session, _TAKE_OR_FAIL, [step[1:] for step in steps])
        except psycopg.Error as exc:
            lot_id = _moved_lot(exc)
            if lot_id is None:
                raise
            raise StockMoved(lot_id) from None
        _forget_reserved(session, (lot_id for _, lot_id, _, _ in steps))


def reserve_lines(
    session: Session,
    store_id: int,
    lines: Sequence[LineRequest],
    *,
    min_expiry: date,
    min_expiry_by_product: Mapping[int, date] | None = None,
) -> dict[int, list[Allocation]]:
    """Reserve every line at one store FEFO, all or nothing; raise InsufficientStock listing
    every shortage. Returns product_id -> allocations; the lots' `reserved` is increased.

    Flash sales: the choice is made from an unlocked read, then each chosen lot is taken with
    one conditional UPDATE (lot id order), so concurrent buyers of one product hold its row
    lock only from that statement to their commit and never wait to read. When a lot no longer
    has the units (someone took them in between), the units taken are given back and the lots
    are locked and chosen again: exact, as before, only slower.
    """
    planned = plan_lines(
        session,
        store_id,
        lines,
        min_expiry=min_expiry,
        min_expiry_by_product=min_expiry_by_product,
    )
    if _take(session, planned.plan, planned.floors):
        return planned.plan
    per_product_min = dict(min_expiry_by_product or {})
    floor = min([min_expiry, *per_product_min.values()])
    return _reserve_locked(session, store_id, lines, floor, min_expiry, per_product_min)


def _reserve_locked(
    session: Session,
    store_id: int,
    lines: Sequence[LineRequest],
    floor: date,
    min_expiry: date,
    per_product_min: Mapping[int, date],
) -> dict[int, list[Allocation]]:
    # One statement locks every candidate lot of the cart, in id order (see the module doc).
    # Lots too close to expiry for every line are left unlocked: nobody can allocate them.
    lots = session.scalars(
        select(Lot)
        .where(
            Lot.store_id == store_id,
            Lot.product_id.in_(sorted({line.product_id for line in lines})),
            Lot.expiry_date >= floor,
        )
        .order_by(Lot.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    seen = [
        SimpleNamespace(
            id=lot.id,
            product_id=lot.product_id,
            expiry_date=lot.expiry_date,
            available=lot.on_hand - lot.reserved,
            price_minor=lot.price_minor,
        )
        for lot in lots
    ]
    result, shortages = _plan(seen, lines, min_expiry, per_product_min)
    if shortages:
        raise InsufficientStock(shortages)
    locked = {lot.id: lot for lot in lots}
    for chosen in result.values():
        for a in chosen:
            locked[a.lot_id].reserved += a.quantity
    session.flush()
    return result


def _lock_lots(session: Session, lot_ids: Iterable[int]) -> dict[int, Lot]:
    ids = sorted(set(lot_ids))
    if not ids:
        return {}
    rows = session.scalars(
        select(Lot)
        .where(Lot.id.in_(ids))
        .order_by(Lot.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {lot.id: lot for lot in rows}


def release(session: Session, allocations: Iterable[tuple[int, int]]) -> None:
    """Give reserved units back to their lots: (lot_id, quantity) pairs."""
    allocations = list(allocations)
    lots = _lock_lots(session, (lot_id for lot_id, _ in allocations))
    for lot_id, quantity in allocations:
        lot = lots[lot_id]
        # The point of sale may have counted the lot down below what we reserved; never go
        # negative, the CHECK would refuse the whole cancellation.
        lot.reserved = max(0, lot.reserved - quantity)
    session.flush()


def commit(session: Session, allocations: Iterable[tuple[int, int]]) -> None:
    """Take reserved units out of stock when goods leave the store: on_hand and reserved drop."""
    allocations = list(allocations)
    lots = _lock_lots(session, (lot_id for lot_id, _ in allocations))
    for lot_id, quantity in allocations:
        lot = lots[lot_id]
        lot.reserved = max(0, lot.reserved - quantity)
        lot.on_hand = max(0, lot.on_hand - quantity)
    session.flush()


@dataclass(frozen=True)
class HeldUnits:
    """Units of one product an order holds at a store, and the days its lots must last."""

    product_id: int
    held: Sequence[tuple[int, int]]  # (lot_id, quantity) reserved now
    keep_until: date  # a held lot that expires before this day is given up
    min_expiry: date  # a lot taken instead must be in date on this day (keep_until or later)


@dataclass(frozen=True)
class MovedUnits:
    """Units of one product moved to longer-dated lots."""

    product_id: int
    released: list[tuple[int, int]]  # (lot_id, quantity) given back
    reserved: list[Allocation]  # taken instead, FEFO


def move_reservations(
    session: Session, store_id: int, holds: Sequence[HeldUnits]
) -> list[MovedUnits]:
    """Move held units off lots that expire before each hold's `keep_until` to lots in date on its
    `min_expiry`, FEFO, all or nothing: raise InsufficientStock (nothing moved) listing the units
    of each product that no such lot can take. Returns the moves, one per hold that had any."""
    held_ids = {lot_id for hold in holds for lot_id, _ in hold.held}
    if not held_ids:
        return []
    # Read without a lock first: most holds already last, and then no lot is locked at all.
    expiry = dict(
        session.execute(select(Lot.id, Lot.expiry_date).where(Lot.id.in_(held_ids))).all()
    )
    short_holds = [
        hold for hold in holds if any(expiry[lot_id] < hold.keep_until for lot_id, _ in hold.held)
    ]
    if not short_holds:
        return []
    # Every lot of the store for these products, locked by id in one statement: the order
    # reserve_lines takes, so a move and a checkout never deadlock.
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(Lot)
            .where(
                Lot.store_id == store_id,
                Lot.product_id.in_(sorted({hold.product_id for hold in short_holds})),
            )
            .order_by(Lot.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    moves: list[MovedUnits] = []
    shortages: list[Shortage] = []
    for hold in short_holds:
        short = [
            (lot_id, qty) for lot_id, qty in hold.held if lots[lot_id].expiry_date < hold.keep_until
        ]
        if not short:
            continue  # its lots' expiry changed before the lock: they last now
        needed = sum(qty for _, qty in short)
        candidates = [
            LotStock(lot.id, lot.expiry_date, lot.on_hand - lot.reserved, lot.price_minor)
            for lot in lots.values()
            if lot.product_id == hold.product_id
        ]
        chosen = choose_lots(candidates, needed, min_expiry=hold.min_expiry, all_or_nothing=True)
        if chosen:
            moves.append(MovedUnits(hold.product_id, short, chosen))
        else:
            shortages.append(Shortage(hold.product_id, needed))
    if shortages:
        raise InsufficientStock(shortages)
    for move in moves:
        for lot_id, qty in move.released:
            lots[lot_id].reserved -= qty
        for a in move.reserved:
            lots[a.lot_id].reserved += a.quantity
    session.flush()
    return moves


def swap(
    session: Session,
    store_id: int,
    release_units: Sequence[tuple[int, int]],
    line: LineRequest,
    *,
    min_expiry: date,
) -> list[Allocation]:
    """Give back `release_units` ((lot_id, quantity) pairs) and reserve `line` FEFO instead, all
    or nothing (InsufficientStock, nothing changed). One statement locks both sets of lots in
    id order, as reserve_lines does, so a swap and a checkout never deadlock."""
    released_ids = sorted({lot_id for lot_id, _ in release_units})
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(Lot)
            .where(
                (Lot.id.in_(released_ids))
                | (
                    (Lot.store_id == store_id)
                    & (Lot.product_id == line.product_id)
                    & (Lot.expiry_date >= min_expiry)
                )
            )
            .order_by(Lot.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    giving_back: dict[int, int] = {}
    for lot_id, quantity in release_units:
        giving_back[lot_id] = giving_back.get(lot_id, 0) + quantity
    candidates = [
        # Units given back by this swap count as free (same product, same lots).
        LotStock(
            lot.id,
            lot.expiry_date,
            lot.on_hand - max(0, lot.reserved - giving_back.get(lot.id, 0)),
            lot.price_minor,
        )
        for lot in lots.values()
        if lot.store_id == store_id and lot.product_id == line.product_id
    ]
    chosen = choose_lots(candidates, line.quantity, min_expiry=min_expiry, all_or_nothing=True)
    if not chosen:
        available = sum(max(0, c.available) for c in candidates if c.expiry_date >= min_expiry)
        raise InsufficientStock([Shortage(line.product_id, line.quantity - available)])
    for lot_id, quantity in giving_back.items():
        lots[lot_id].reserved = max(0, lots[lot_id].reserved - quantity)
    for a in chosen:
        lots[a.lot_id].reserved += a.quantity
    session.flush()
    return chosen
