"""Search that counts an equivalent in stock as covering a line the patient allows it for.

The plain search (`stores.search`) runs first and is the answer whenever it already has `limit`
complete stores or no line may be substituted. Otherwise one more statement reads, for the stores
in the radius, the usable stock of the cart's products and their equivalents; a store that
covers every line (each with the asked product, else with the first equivalent by name that has
the same number of units in stock) is then checked by the plain search at that store with the
chosen products, so its answer (open hours, zone, ETA, fleet) is exactly the plain search's.

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
from stores.proximity import POINT_SQL
from stores.statements import Step, Steps

# A store found through an equivalent is looked at from where it stands, alone.
AT_STORE_RADIUS_M = 1.0


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


def substituted(lines: Sequence[CartLine], chosen: Sequence[Choice]) -> list[CartLine]:
    """Return the cart with each chosen stand-in in place of its line."""
    by_line = {c.for_product_id: c for c in chosen}
    return [
        CartLine(by_line[line.product_id].product_id, by_line[line.product_id].quantity)
        if line.product_id in by_line
        else line
        for line in lines
    ]


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

# Usable stock per (store, product) for the stores in the radius, nearest first. Runs only when
# the plain search came back short and some line has equivalents; it reads the lots of the
# cart's products and their stand-ins in the radius (ix_lots_product_store), not the city.
_STOCK_SQL = text(
    f"""
    SELECT s.id AS store_id, ST_Distance(s.location, {POINT_SQL}) AS distance_m,
           ST_Y(s.location::geometry) AS lat, ST_X(s.location::geometry) AS lon,
           l.product_id, sum(l.on_hand - l.reserved) AS available
    FROM lots AS l
    JOIN stores AS s ON s.id = l.store_id
    WHERE l.product_id = ANY(CAST(:product_ids AS integer[]))
      AND s.is_active
      AND ST_DWithin(s.location, {POINT_SQL}, :radius_m)
      AND l.expiry_date >= (CAST(:now AS timestamptz) AT TIME ZONE s.timezone)::date
                           + s.min_shelf_life_days
      AND l.on_hand > l.reserved
    GROUP BY s.id, l.product_id
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
    plain = yield from search.plan_search(
        database,
        lat=lat,
        lon=lon,
        lines=lines,
        limit=limit,
        radius_m=radius_m,
        partial_beside_complete=partial_beside_complete,
        **where,
    )
    complete = [m for m in plain if m.complete]
    if len(complete) >= limit or wishes is None:
        return plain
    merged = cart.merge_lines(lines)
    # The common case, a cart without equivalents, costs this one indexed query.
    rows = yield Step(_ALTERNATIVES_SQL, {"ids": [line.product_id for line in merged]})
    if not rows:
        return plain
    products = {row.id: Pack(row.id, row.pack_size, rx_only=row.rx_only) for row in rows}
    found: dict[int, list[Pack]] = {}
    for row in rows:
        found.setdefault(row.id, []).append(
            Pack(row.other_id, row.other_pack_size, row.other_max_per_order)
        )
    options = stand_ins(merged, allowed_products(products, wishes), products, found)
    if not options:
        return plain
    product_ids = sorted(
        {line.product_id for line in merged} | {c.product_id for cs in options.values() for c in cs}
    )
    rows = yield Step(
        _STOCK_SQL,
        {
            "lat": lat,
            "lon": lon,
            "radius_m": proximity.search_radius(radius_m),
            "now": now,
            "product_ids": product_ids,
        },
    )
    stock: dict[int, dict[int, int]] = {}
    at: dict[int, tuple[float, float, float]] = {}  # store -> distance, lat, lon
    for row in rows:
        stock.setdefault(row.store_id, {})[row.product_id] = int(row.available)
        at[row.store_id] = (float(row.distance_m), row.lat, row.lon)
    known = {m.store_id for m in complete}
    chosen_stores = list(complete)
    for store_id in sorted(stock, key=lambda sid: (at[sid][0], sid)):
        if len(chosen_stores) >= limit:
            break
        if store_id in known:
            continue
        chosen = choose(merged, stock[store_id], options)
        if not chosen:
            continue  # short even with equivalents, or complete already (found by the plain one)
        # The plain search at the store with the chosen products, so its answer (open hours,
        # zone, ETA, fleet) is exactly the plain search's.
        distance_m, store_lat, store_lon = at[store_id]
        match = None
        for candidate in (
            yield from search.plan_search(
                database,
                lat=store_lat,
                lon=store_lon,
                lines=substituted(merged, chosen),
                limit=proximity.MAX_LIMIT,
                radius_m=max(AT_STORE_RADIUS_M, proximity.MIN_RADIUS_M),
                fulfillment=fulfillment,
                delivery_point=delivery_point or (lat, lon),
                now=now,
                # Only this store's complete answer counts: no walk for stores holding part.
                partial_beside_complete=False,
            )
        ):
            if candidate.store_id == store_id and candidate.complete:
                match = candidate
        if match is None:
            continue  # closed to this fulfillment, outside its zone, or stock moved meanwhile
        match.distance_m = distance_m
        match.substitutes = [c.as_dict() for c in chosen]
        chosen_stores.append(match)
    chosen_stores.sort(key=lambda m: (m.distance_m, m.store_id))
    chosen_stores = chosen_stores[:limit]
    taken = {m.store_id for m in chosen_stores}
    partial = [m for m in plain if not m.complete and m.store_id not in taken]
    return chosen_stores + partial[: limit - len(chosen_stores)]
