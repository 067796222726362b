"""Order bodies and stock snapshots for the orders tests (the rows come from tests.factories)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.orm import Session

from o2o.orders.models import Order
from stores.models import Lot
from tests.factories import SHANGHAI

# A quiet street grid: the patient stands at HOME; stores are placed by offsets in metres
# (tests.factories.offset).
HOME = SHANGHAI


def order_body(
    items: list[tuple[int, int]],
    *,
    fulfillment: str = "pickup",
    at: tuple[float, float] = HOME,
    address_at: tuple[float, float] | None = None,
    store_id: int | None = None,
) -> dict:
    body: dict = {
        "items": [{"product_id": p, "quantity": q} for p, q in items],
        "location": {"lat": at[0], "lon": at[1]},
        "fulfillment": fulfillment,
    }
    if address_at is not None:
        body["delivery_address"] = {
            "location": {"lat": address_at[0], "lon": address_at[1]},
            "text": "Room 501, 8 Example Rd",
        }
    if store_id is not None:
        body["store_id"] = store_id
    return body


def stock(session: Session, lot: Lot) -> tuple[int, int]:
    """(on_hand, reserved) as committed/flushed now."""
    session.expire(lot)
    return lot.on_hand, lot.reserved


def order_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Order))


@dataclass
class Statements:
    """What the database was asked while `watched` ran: each statement's start, and those that
    did not come from SQLAlchemy's cache of compiled statements."""

    run: list[str] = field(default_factory=list)
    compiled_anew: list[str] = field(default_factory=list)


@contextmanager
def watched() -> Iterator[Statements]:
    """Record every statement any engine runs in the block (the served application's too)."""
    seen = Statements()

    def record(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())[:100]
        seen.run.append(text)
        # A savepoint's statement is its name: nothing to cache.
        savepoint = statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
        if getattr(context, "cache_hit", CACHE_HIT) is not CACHE_HIT and not savepoint:
            seen.compiled_anew.append(f"{context.cache_hit}: {text}")

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)
