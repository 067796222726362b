"""Order bodies and stock snapshots for the orders tests (the rows come from tests.factories)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
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
    """Record every statement any engine runs in the block (the served application's too), and
    those run on psycopg's async connections past SQLAlchemy (the driver pool's: a hot read, a
    courier's claim, a placement's user and key)."""
    seen = Statements()
    # Statements SQLAlchemy announced on an async connection and has yet to send through the
    # driver's cursor, which then records nothing for them.
    announced = [0]

    def record(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())[:100]
        seen.run.append(text)
        if isinstance(conn.connection.driver_connection, psycopg.AsyncConnection):
            announced[0] += 1
        # A savepoint's statement is its name: nothing to cache.
        savepoint = statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
        if getattr(context, "cache_hit", CACHE_HIT) is not CACHE_HIT and not savepoint:
            seen.compiled_anew.append(f"{context.cache_hit}: {text}")

    def counted(sent):
        async def send(cursor, query, *args, **kwargs):
            if announced[0]:
                announced[0] -= 1
            else:
                seen.run.append(" ".join(str(query).split())[:100])
            return await sent(cursor, query, *args, **kwargs)

        return send

    sent = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany
    event.listen(Engine, "before_cursor_execute", record)
    psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany = map(counted, sent)
    try:
        yield seen
    finally:
        psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany = sent
        event.remove(Engine, "before_cursor_execute", record)
