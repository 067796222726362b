"""Search that counts an equivalent in stock as covering a line the patient allows it for.

The plain search (`stores.search`) finds its complete stores first, and is the answer whenever it
already has `limit` of them or no line may be substituted. Otherwise one statement reads the cart's
equivalents, and, when some line may use one, one more (`search.plan_holders`; another for each
further HOLDERS_BATCH stores, rarely needed) reads the stores in the radius that hold any of the
cart's products or their equivalents and serve the fulfillment, nearest first, each with its
usable stock of every one and its answer written as the plain search writes a result (open
hours, zone, ETA, fleet). A store that covers every line (each with the asked product, else with
the first equivalent by name that has the same number of units in stock) is then a complete
result. The plain search's partial stores are looked for last, only when the page still has
room (or when that is what checks the cart).

Which equivalent: the asked product whenever the store has enough of it; else the equivalents in
catalogue order (name, then id), the first with enough units. A product the cart asks for
elsewhere is never used as a stand-in (one order line per product).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from stores import cart, equivalents, proximity, search, statements
from stores.cart import CartLine
from stores.models import Product
from stores.statements import Step, Steps


@dataclass(frozen=True)
class Choice:
    """A stand-in for one cart line: `quantity` of `product_id` for the asked product."""

    for_product_id: int
    product_id: int
    quantity: int

    def as_dict(self) -> dict:
        return {
            "for_product_id": self.for_product_id,
            "product_id": self.product_id,
            "quantity": self.quantity,
        }


@dataclass(frozen=True)
class Pack:
    """What `stand_ins` and `allowed_products` read of a product."""

    id: int
    pack_size: int
    max_per_order: int | None = None
    rx_only: bool = False


def allowed_products(
    products: Mapping[int, Product | Pack], wishes: Mapping[int, str | None]
) -> frozenset[int]:
    """Return the cart's products that may be substituted: a line's own word, else allowed for
    over-the-counter products and not for prescription ones."""
    return frozenset(
        product_id
        for product_id, product in products.items()
        if (wishes.get(product_id) or ("not_allowed" if product.rx_only else "allowed"))
        == "allowed"
    )


def stand_ins(
    lines: Sequence[CartLine],
    allowed: frozenset[int],
    products: Mapping[int, Product | Pack],
    found: Mapping[int, Sequence[Product | Pack]],
) -> dict[int, list[Choice]]:
    """Return, per allowed line, its equivalents (`found`, from `equivalents.alternatives`) with
    the quantity giving the same units; never a product the cart asks for itself (pure)."""
    asked = {line.product_id for line in lines}
    options: dict[int, list[Choice]] = {}
    for line in lines:
        if line.product_id not in allowed:
            continue
        for other in found.get(line.product_id, []):
            if other.id in asked:
                continue
            quantity = equivalents.substitute_quantity(
                line.quantity, products[line.product_id].pack_size, other.pack_size
            )
            limit = min(cart.MAX_QUANTITY, other.max_per_order or cart.MAX_QUANTITY)
            if quantity is not None and quantity <= limit:
                options.setdefault(line.product_id, []).append(
                    Choice(line.product_id, other.id, quantity)
                )
    return options


def choose(
    lines: Sequence[CartLine],
    available: Mapping[int, int],
    options: Mapping[int, Sequence[Choice]],
) -> list[Choice] | None:
    """Pick the stand-ins that let a store's stock cover every line (pure); None if it cannot.
    A line the asked product covers gets none; a product stands in for one line at most."""
    chosen: list[Choice] = []
    used: dict[int, int] = {}
    for line in lines:
        if available.get(line.product_id, 0) - used.get(line.product_id, 0) >= line.quantity:
            used[line.product_id] = used.get(line.product_id, 0) + line.quantity
            continue
        for option in options.get(line.product_id, ()):
            # One order line per product: a stand-in already filling another line is not free.
            if option.product_id not in used and available.get(option.product_id, 0) >= (
                option.quantity
            ):
                used[option.product_id] = used.get(option.product_id, 0) + option.quantity
                chosen.append(option)
                break
        else:
            return None
    return chosen


# For each cart product with equivalents: what `stand_ins` reads of it, then of each equivalent
# that may be sold online (never a controlled one), by name then id, as
# `equivalents.alternatives` lists them. A cart without equivalents gets no rows.
_ALTERNATIVES_SQL = text(
    """
    SELECT p.id, p.rx_only, p.pack_size, o.id AS other_id, o.pack_size AS other_pack_size,
           o.max_per_order AS other_max_per_order
    FROM products AS p
    JOIN products AS o ON o.equivalence_key = p.equivalence_key AND o.id <> p.id
    WHERE p.id = ANY(CAST(:ids AS integer[])) AND NOT o.controlled
    ORDER BY p.id, o.name, o.id
    """
)


def search_stores(session: Session, **where: Any) -> list[search.StoreMatch]:
    """`plan_search` (the same arguments, after the session) run on a session."""
    return statements.run(session, plan_search(statements.database(session), **where))


async def search_stores_async(conn: AsyncConnection, **where: Any) -> list[search.StoreMatch]:
    """`plan_search` (the same arguments, after the connection) run on the driver's async
    connection (the search endpoint): the same statements as on a session, the same answer."""
    return await statements.run_async(conn, plan_search(statements.driver_database(conn), **where))


def plan_search(
    database: str,
    *,
    lat: float,
    lon: float,
    lines: Sequence[CartLine],
    wishes: Mapping[int, str | None] | None = None,
    fulfillment: search.Fulfillment = "any",
    limit: int = 5,
    radius_m: float | None = None,
    delivery_point: tuple[float, float] | None = None,
    now: datetime | None = None,
    partial_beside_complete: bool = True,
) -> Steps[list[search.StoreMatch]]:
    """Search as `stores.search.plan_search`, counting equivalents in stock as covering the lines
    that allow them (`wishes`: product id -> "allowed" / "not_allowed" / None for the default;
    None: no equivalents at all); a store covered so lists them in `substitutes`. Planned as
    statements (`stores.statements`), whoever runs them."""
    now = now or clock.now()
    where = {"fulfillment": fulfillment, "delivery_point": delivery_point, "now": now}
    first = yield from search.plan_complete(
        database, lat=lat, lon=lon, lines=lines, limit=limit, radius_m=radius_m, **where
    )
    complete = first.matches
    completed: list[search.StoreMatch] = []
    if len(complete) < limit and wishes is not None:
        completed = yield from _completed(
            lat=lat,
            lon=lon,
            lines=lines,
            wishes=wishes,
            radius_m=radius_m,
            known={m.store_id for m in complete},
            needed=limit - len(complete),
            **where,
        )
    chosen = sorted(complete + completed, key=proximity.sort_key)[:limit]
    if len(chosen) == limit and first.cart_checked:
        # The page is full: the plain search's partial stores would not be shown, so they are
        # not looked for (unless finding them is what checks the cart).
        return chosen
    partial = yield from search.plan_partial(first, beside_complete=partial_beside_complete)
    taken = {m.store_id for m in chosen}
    rest = [m for m in partial if m.store_id not in taken]
    return chosen + rest[: limit - len(chosen)]


def _completed(
    *,
    lat: float,
    lon: float,
    lines: Sequence[CartLine],
    wishes: Mapping[int, str | None],
    fulfillment: search.Fulfillment,
    radius_m: float | None,
    delivery_point: tuple[float, float] | None,
    now: datetime,
    known: set[int],
    needed: int,
) -> Steps[list[search.StoreMatch]]:
    """Return the `needed` nearest stores (beyond the `known` complete ones) that the cart's
    equivalents complete, each listing its stand-ins; none for a cart without equivalents."""
    merged = cart.merge_lines(lines)
    # The common case, a cart without equivalents, costs this one indexed query.
    rows = yield Step(_ALTERNATIVES_SQL, {"ids": [line.product_id for line in merged]})
    if not rows:
        return []
    products = {row.id: Pack(row.id, row.pack_size, rx_only=row.rx_only) for row in rows}
    found: dict[int, list[Pack]] = {}
    for row in rows:
        found.setdefault(row.id, []).append(
            Pack(row.other_id, row.other_pack_size, row.other_max_per_order)
        )
    options = stand_ins(merged, allowed_products(products, wishes), products, found)
    if not options:
        return []
    product_ids = sorted(
        {line.product_id for line in merged} | {c.product_id for cs in options.values() for c in cs}
    )
    # The stores the equivalents complete, read nearest first a batch at a time until the
    # nearest of them are proven (as a walk's are: no store further on the sphere can be nearer).
    completed: list[search.StoreMatch] = []
    last = None
    while True:
        batch = yield from search.plan_holders(
            lat=lat,
            lon=lon,
            product_ids=product_ids,
            fulfillment=fulfillment,
            radius_m=radius_m,
            delivery_point=delivery_point,
            now=now,
            after=last,
        )
        for holder in batch:
            if holder.match.store_id in known:
                continue
            chosen = choose(merged, holder.available, options)
            if not chosen:
                continue  # short even with equivalents, or complete already (found by the plain one)
            holder.match.substitutes = [c.as_dict() for c in chosen]
            completed.append(holder.match)
        completed.sort(key=proximity.sort_key)
        if len(batch) < search.HOLDERS_BATCH or proximity.proven(
            completed, needed, batch[-1].sphere_m
        ):
            return completed[:needed]
        last = batch[-1]
