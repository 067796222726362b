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

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from o2o import clock
from stores import cart, equivalents, proximity, search
from stores.cart import CartLine
from stores.models import Product
from stores.proximity import POINT_SQL

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


def allowed_products(
    products: Mapping[int, Product], wishes: Mapping[int, str | None]
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
    products: Mapping[int, Product],
    found: Mapping[int, Sequence[Product]],
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


# Usable stock per (store, product) for the stores in the radius, nearest first. Runs only when
# the plain search came back short and some line has equivalents; it reads the lots of the
# cart's products and their stand-ins in the radius (ix_lots_product_store), not the city.
_STOCK_SQL = text(
    f"""
    SELECT s.id AS store_id, ST_Distance(s.location, {POINT_SQL}) AS distance_m,
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


def search_stores(
    session: Session,
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
) -> list[search.StoreMatch]:
    """Search as `stores.search.search_stores`, counting equivalents in stock as covering the
    lines that allow them (`wishes`: product id -> "allowed" / "not_allowed" / None for the
    default; None: no equivalents at all); a store covered so lists them in `substitutes`."""
    now = now or clock.now()
    plain = search.search_stores(
        session,
        lat=lat,
        lon=lon,
        lines=lines,
        fulfillment=fulfillment,
        limit=limit,
        radius_m=radius_m,
        delivery_point=delivery_point,
        now=now,
    )
    complete = [m for m in plain if m.complete]
    if len(complete) >= limit or wishes is None:
        return plain
    merged = cart.merge_lines(lines)
    # The common case, a cart without equivalents, costs this one indexed query.
    found = equivalents.alternatives(session, [line.product_id for line in merged])
    if not found:
        return plain
    products = {
        p.id: p
        for p in session.scalars(
            select(Product).where(Product.id.in_([line.product_id for line in merged]))
        )
    }
    options = stand_ins(merged, allowed_products(products, wishes), products, found)
    if not options:
        return plain
    product_ids = sorted(
        {line.product_id for line in merged} | {c.product_id for cs in options.values() for c in cs}
    )
    rows = session.execute(
        _STOCK_SQL,
        {
            "lat": lat,
            "lon": lon,
            "radius_m": proximity.search_radius(radius_m),
            "now": now,
            "product_ids": product_ids,
        },
    ).all()
    stock: dict[int, dict[int, int]] = {}
    distance: dict[int, float] = {}
    for row in rows:
        stock.setdefault(row.store_id, {})[row.product_id] = int(row.available)
        distance[row.store_id] = float(row.distance_m)
    known = {m.store_id for m in complete}
    found = list(complete)
    for store_id in sorted(stock, key=lambda sid: (distance[sid], sid)):
        if len(found) >= limit:
            break
        if store_id in known:
            continue
        chosen = choose(merged, stock[store_id], options)
        if not chosen:
            continue  # short even with equivalents, or complete already (found by the plain one)
        match = _at_store(
            session,
            store_id,
            substituted(merged, chosen),
            fulfillment,
            delivery_point or (lat, lon),
            now,
        )
        if match is None:
            continue  # closed to this fulfillment, outside its zone, or stock moved meanwhile
        match.distance_m = distance[store_id]
        match.substitutes = [c.as_dict() for c in chosen]
        found.append(match)
    found.sort(key=lambda m: (m.distance_m, m.store_id))
    found = found[:limit]
    taken = {m.store_id for m in found}
    partial = [m for m in plain if not m.complete and m.store_id not in taken]
    return found + partial[: limit - len(found)]


def _at_store(
    session: Session,
    store_id: int,
    lines: list[CartLine],
    fulfillment: search.Fulfillment,
    delivery_point: tuple[float, float],
    now: datetime,
) -> search.StoreMatch | None:
    """Return the plain search's complete answer for one store and cart, or None."""
    at = session.execute(
        text(
            "SELECT ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon "
            "FROM stores WHERE id = :id"
        ),
        {"id": store_id},
    ).one()
    for match in search.search_stores(
        session,
        lat=at.lat,
        lon=at.lon,
        lines=lines,
        fulfillment=fulfillment,
        limit=proximity.MAX_LIMIT,
        radius_m=max(AT_STORE_RADIUS_M, proximity.MIN_RADIUS_M),
        delivery_point=delivery_point,
        now=now,
    ):
        if match.store_id == store_id and match.complete:
            return match
    return None
