"""Stock pushed from the stores' points of sale: the one lot upsert (API syncs and bulk imports),
idempotent syncs whose count is the truth (orders holding more than a lot now has give way first,
through `events.stock_below_reserved`), the planning counts search reads,
and a store's lots as the back office lists them. Orders change stock in `stores.allocation`."""

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o import clock, pagination
from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext
from stores import events, service
from stores.models import InventorySync, Lot, Product, Store
from stores.schemas import InventoryIn, InventoryLotIn, InventorySyncOut, LotOut

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
            gettext("Stock was reserved for an order while this update ran; send it again."),
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
            gettext(
                "This store sells in {currency}; lots priced in {currencies} are refused."
            ).format(currency=store.currency, currencies=", ".join(foreign)),
            code="currency_mismatch",
            details={"store_currency": store.currency, "currencies": foreign},
        )


def _check_products_exist(session: Session, product_ids: set[int]) -> None:
    found = set(session.scalars(select(Product.id).where(Product.id.in_(product_ids))))
    unknown = sorted(product_ids - found)
    if unknown:
        raise InvalidInput(
            gettext("Unknown products: {products}; nothing was applied.").format(
                products=", ".join(map(str, unknown))
            ),
            code="unknown_products",
            details={"product_ids": unknown},
        )


def _lock_and_check_reserved(session: Session, store_id: int, params: dict[str, list]) -> None:
    """Lock the lots this sync changes; where the new count is below what orders hold, let the
    orders give way (`events.stock_below_reserved`), and refuse what no order accounts for."""
    # Locked in id order, as the order reservations lock them: never a deadlock, and no order
    # can reserve more of these lots between this check and the upsert.
    rows = session.execute(
        text(
            f"""
            SELECT l.id, l.product_id, l.lot_number, l.reserved, t.on_hand
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
    reserved = {row.id: row.reserved for row in rows}
    if short:
        events.stock_below_reserved.send(session, store_id, [(r.id, r.on_hand) for r in short])
        reserved.update(
            session.execute(
                text("SELECT id, reserved FROM lots WHERE id = ANY(:ids)"),
                {"ids": [r.id for r in short]},
            ).all()
        )
        short = [r for r in short if r.on_hand < reserved[r.id]]
    if short:
        raise Conflict(
            gettext(
                "On hand may not go below reserved units that no order accounts for; nothing was applied."
            ),
            code="below_reserved",
            details={
                "lots": [
                    {
                        "product_id": row.product_id,
                        "lot_number": row.lot_number,
                        "on_hand": row.on_hand,
                        "reserved": reserved[row.id],
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

    All or nothing: unknown products (422) or a quantity below reservations no order accounts for
    (409) refuse the whole sync; below what orders hold, the orders give way first. The sync id is claimed first with ON CONFLICT DO NOTHING, so of two identical
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
                 AND l.on_hand > l.reserved AND l.expiry_date >= :earliest_day
            {where}
            GROUP BY p.id
            ORDER BY p.id
            ON CONFLICT (product_id) DO UPDATE
            SET store_count = EXCLUDED.store_count, refreshed_at = EXCLUDED.refreshed_at
            """
        ),
        # Unexpired somewhere on Earth: the earliest calendar day in use (UTC-12), so no store's
        # local day is ahead of the count (it may count a lot a day longer; it only guides plans).
        {"ids": ids, "earliest_day": clock.today("Etc/GMT+12")},
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
    sellable_from = service.min_sellable_expiry(store, now or clock.now())
    query = (
        select(Lot, Product.name, Product.gtin)
        .join(Product, Product.id == Lot.product_id)
        .where(Lot.store_id == store.id)
    )
    if product_id is not None:
        query = query.where(Lot.product_id == product_id)
    rows, next_cursor = service.keyset_page(
        session,
        query,
        listing="lots",
        keys=[
            (Lot.product_id, pagination.integer),
            (Lot.expiry_date, pagination.day),
            (Lot.id, pagination.integer),
        ],
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
