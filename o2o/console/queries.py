"""Read-only views the console pages show: the orders board and the inventory lists.

They read; they never decide or change anything. Decisions (is an order at risk, may it move on)
come from the owning domain.
"""

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from dispatch.models import SlaEscalation
from o2o import clock
from o2o.console.rendering import zone_named
from o2o.geo import to_latlon
from o2o.i18n import N_, gettext
from o2o.orders.models import Fulfillment, Order, OrderStatus
from stores import service as stores_service
from stores.models import Lot, Product, Store

S = OrderStatus

BOARD_COLUMNS = (
    (S.AWAITING_PRESCRIPTION, N_("Awaiting prescription")),
    (S.RELEASED, N_("New (released)")),
    (S.PREPARING, N_("Preparing")),
    (S.READY, N_("Ready")),
    (S.OUT_FOR_DELIVERY, N_("Out for delivery")),
)
# Finished orders shown at the end of the board, so staff can see what just left.
RECENT_DONE = 10


def store_zone(store: Store) -> ZoneInfo:
    """The store's time zone (UTC if the stored name is unknown)."""
    return zone_named(store.timezone)


def store_today(store: Store, now: datetime | None = None) -> date:
    """Today's date where the store is."""
    return clock.today(store_zone(store), at=now)


def parse_uuid(value: str, what: str = "order") -> uuid.UUID:
    """Parse an id from a URL; a malformed one is simply not found."""
    from o2o.errors import NotFound

    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError):
        raise NotFound(
            gettext("No such {what}.").format(what=what), code=f"{what}_not_found"
        ) from None


# --- orders board --------------------------------------------------------------------------


@dataclass
class BoardLine:
    product_id: int
    name: str
    quantity: int
    rx_only: bool


@dataclass
class BoardOrder:
    id: uuid.UUID
    short_id: str
    status: OrderStatus
    fulfillment: Fulfillment
    created_at: datetime
    released_at: datetime | None
    ready_at: datetime | None
    sla_deadline: datetime | None
    total_minor: int
    currency: str
    address: str | None
    lines: list[BoardLine] = field(default_factory=list)
    at_risk: bool = False
    overdue: bool = False
    pickup_code_failures: int = 0
    cancel_reason: str | None = None
    slot_start: datetime | None = None
    slot_end: datetime | None = None
    # The advised start (deliveries only): in time for a slot, or just in time when the fleet's
    # queue means no courier comes for it sooner.
    prepare_from: datetime | None = None


@dataclass
class Board:
    columns: list[tuple[OrderStatus, str, list[BoardOrder]]]
    done: list[BoardOrder]
    at_risk_count: int
    # Open scheduled deliveries grouped by their slot, earliest slot first: (start, end, orders).
    slots: list[tuple[datetime, datetime, list[BoardOrder]]] = field(default_factory=list)


def _board_order(order: Order, names: dict[int, str]) -> BoardOrder:
    return BoardOrder(
        id=order.id,
        short_id=str(order.id)[:8],
        status=order.status,
        fulfillment=order.fulfillment,
        created_at=order.created_at,
        released_at=order.released_at,
        ready_at=order.ready_at,
        sla_deadline=order.sla_deadline,
        prepare_from=order.prepare_from,
        total_minor=order.total_minor,
        currency=order.currency,
        address=order.delivery_address_text,
        lines=[
            BoardLine(line.product_id, names.get(line.product_id, "?"), line.quantity, line.rx_only)
            for line in order.lines
        ],
        pickup_code_failures=order.pickup_code_failures,
        cancel_reason=order.cancel_reason,
        slot_start=order.delivery_slot_start,
        slot_end=order.delivery_slot_end,
    )


def product_labels(session: Session, product_ids) -> dict[int, str]:
    """Product id -> "Name strength" for display."""
    ids = set(product_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Product.id, Product.name, Product.strength).where(Product.id.in_(ids))
    )
    return {pid: f"{name} {strength}".strip() for pid, name, strength in rows}


def _product_names(session: Session, orders: list[Order]) -> dict[int, str]:
    return product_labels(session, {line.product_id for o in orders for line in o.lines})


def at_risk_order_ids(session: Session, store_id: int, order_ids: list[uuid.UUID]) -> set:
    """Which of these orders the SLA monitor has escalated as at risk.

    The monitor records its decision in sla_escalations; the console only reads that record
    (dispatch has no read function for it yet), it never predicts a finish itself.
    """
    if not order_ids:
        return set()
    return set(
        session.scalars(
            select(SlaEscalation.order_id).where(
                SlaEscalation.store_id == store_id, SlaEscalation.order_id.in_(order_ids)
            )
        )
    )


def orders_board(session: Session, store: Store) -> Board:
    """The store's open orders by state (oldest first) and what finished most recently."""
    open_states = [status for status, _ in BOARD_COLUMNS]
    open_orders = list(
        session.scalars(
            select(Order)
            .where(Order.store_id == store.id, Order.status.in_(open_states))
            .order_by(
                # Deliveries by deadline (most urgent first), then everything by age.
                Order.sla_deadline.asc().nulls_last(),
                Order.created_at,
            )
        )
    )
    done = list(
        session.scalars(
            select(Order)
            .where(Order.store_id == store.id, Order.status.in_([S.COMPLETED, S.CANCELLED]))
            .order_by(func.coalesce(Order.completed_at, Order.cancelled_at).desc())
            .limit(RECENT_DONE)
        )
    )
    names = _product_names(session, open_orders + done)
    at_risk_ids = at_risk_order_ids(
        session,
        store.id,
        [o.id for o in open_orders if o.fulfillment is Fulfillment.DELIVERY],
    )
    now = clock.now()
    by_status: dict[OrderStatus, list[BoardOrder]] = {s: [] for s in open_states}
    by_slot: dict[tuple[datetime, datetime], list[BoardOrder]] = {}
    at_risk = 0
    for order in open_orders:
        item = _board_order(order, names)
        item.at_risk = order.id in at_risk_ids
        item.overdue = order.sla_deadline is not None and order.sla_deadline < now
        at_risk += item.at_risk or item.overdue
        by_status[order.status].append(item)
        if item.slot_start is not None:
            by_slot.setdefault((item.slot_start, item.slot_end), []).append(item)
    return Board(
        columns=[(s, label, by_status[s]) for s, label in BOARD_COLUMNS],
        done=[_board_order(o, names) for o in done],
        at_risk_count=at_risk,
        slots=[(start, end, items) for (start, end), items in sorted(by_slot.items())],
    )


# --- inventory -----------------------------------------------------------------------------


@dataclass
class StockRow:
    product_id: int
    name: str
    strength: str
    gtin: str
    rx_only: bool
    on_hand: int
    reserved: int
    sellable: int
    lots: int
    next_expiry: date | None


@dataclass
class ExpiringLot:
    lot_id: int
    product_id: int
    name: str
    lot_number: str
    expiry_date: date
    days_left: int
    on_hand: int
    reserved: int
    state: str  # "expired", "not_sold_online" (inside the shelf-life margin), "soon"


def _sellable_from(store: Store, now: datetime | None) -> date:
    # The stores domain owns the rule (on hand - reserved over lots that last the store's
    # minimum shelf life); the console only asks where the line falls today.
    return stores_service.min_sellable_expiry(store, now or clock.now())


def _stock_columns(sellable_from: date):
    usable = Lot.expiry_date >= sellable_from
    return (
        func.coalesce(func.sum(Lot.on_hand), 0).label("on_hand"),
        func.coalesce(func.sum(Lot.reserved), 0).label("reserved"),
        func.coalesce(func.sum(case((usable, Lot.on_hand - Lot.reserved), else_=0)), 0).label(
            "sellable"
        ),
        func.count(Lot.id).label("lots"),
        func.min(case((Lot.on_hand > 0, Lot.expiry_date))).label("next_expiry"),
    )


def _stock_rows(rows) -> list[StockRow]:
    return [
        StockRow(
            product_id=r.id,
            name=r.name,
            strength=r.strength,
            gtin=r.gtin,
            rx_only=r.rx_only,
            on_hand=int(r.on_hand or 0),
            reserved=int(r.reserved or 0),
            sellable=int(r.sellable or 0),
            lots=int(r.lots or 0),
            next_expiry=r.next_expiry,
        )
        for r in rows
    ]


_PRODUCT_COLUMNS = (Product.id, Product.name, Product.strength, Product.gtin, Product.rx_only)


def low_stock(
    session: Session,
    store: Store,
    threshold: int,
    *,
    limit: int = 100,
    now: datetime | None = None,
) -> list[StockRow]:
    """Products the store stocks whose sellable units are at or below threshold, fewest first."""
    columns = _stock_columns(_sellable_from(store, now))
    sellable = columns[2]
    stmt = (
        select(*_PRODUCT_COLUMNS, *columns)
        .join(Lot, and_(Lot.product_id == Product.id, Lot.store_id == store.id))
        .group_by(Product.id)
        .having(sellable <= threshold)
        .order_by(sellable, Product.name)
        .limit(limit)
    )
    return _stock_rows(session.execute(stmt))


def expiring_lots(
    session: Session,
    store: Store,
    within_days: int,
    *,
    limit: int = 100,
    now: datetime | None = None,
) -> list[ExpiringLot]:
    """Lots with stock that expire within the given days (or already have), soonest first."""
    today = store_today(store, now)
    sellable_from = _sellable_from(store, now)
    rows = session.execute(
        select(Lot, Product.name, Product.strength)
        .join(Product, Product.id == Lot.product_id)
        .where(
            Lot.store_id == store.id,
            Lot.on_hand > 0,
            Lot.expiry_date <= today + timedelta(days=within_days),
        )
        .order_by(Lot.expiry_date, Product.name, Lot.lot_number)
        .limit(limit)
    )
    result = []
    for lot, name, strength in rows:
        days_left = (lot.expiry_date - today).days
        if days_left < 0:
            state = "expired"
        elif lot.expiry_date < sellable_from:
            state = "not_sold_online"
        else:
            state = "soon"
        result.append(
            ExpiringLot(
                lot_id=lot.id,
                product_id=lot.product_id,
                name=f"{name} {strength}".strip(),
                lot_number=lot.lot_number,
                expiry_date=lot.expiry_date,
                days_left=days_left,
                on_hand=lot.on_hand,
                reserved=lot.reserved,
                state=state,
            )
        )
    return result


def search_stock(
    session: Session, store: Store, q: str, *, limit: int = 50, now: datetime | None = None
) -> list[StockRow]:
    """Find products (the catalogue's search) with this store's stock of each, best match first."""
    products, _ = stores_service.search_products(session, q, limit=limit)
    if not products:
        return []
    stmt = (
        select(*_PRODUCT_COLUMNS, *_stock_columns(_sellable_from(store, now)))
        # Outer join: a product the store does not stock is still found, with zero.
        .outerjoin(Lot, and_(Lot.product_id == Product.id, Lot.store_id == store.id))
        .where(Product.id.in_([p.id for p in products]))
        .group_by(Product.id)
    )
    by_id = {row.product_id: row for row in _stock_rows(session.execute(stmt))}
    return [by_id[p.id] for p in products if p.id in by_id]


# --- map data ------------------------------------------------------------------------------


@dataclass
class Dropoff:
    order_id: uuid.UUID
    lat: float
    lon: float
    status: OrderStatus
    on_time: bool | None


def todays_dropoffs(session: Session, store: Store, *, limit: int = 500) -> list[Dropoff]:
    """Delivery addresses of the store's delivery orders created today (store time)."""
    today = store_today(store)
    start = datetime(today.year, today.month, today.day, tzinfo=store_zone(store))
    orders = session.execute(
        select(
            Order.id,
            Order.delivery_location,
            Order.status,
            Order.sla_deadline,
            Order.completed_at,
        )
        .where(
            Order.store_id == store.id,
            Order.fulfillment == Fulfillment.DELIVERY,
            Order.created_at >= start,
            Order.created_at < start + timedelta(days=1),
        )
        .order_by(Order.created_at)
        .limit(limit)
    )
    result = []
    for order in orders:
        if order.delivery_location is None:
            continue
        point = to_latlon(order.delivery_location)
        on_time = None
        if order.status is S.COMPLETED and order.sla_deadline and order.completed_at:
            on_time = order.completed_at <= order.sla_deadline
        result.append(Dropoff(order.id, point["lat"], point["lon"], order.status, on_time))
    return result
