"""A placement's last statements: its lots' takes and the COMMIT, sent to the database together
(`allocation.StockLast.take_and_commit`, `o2o.db.commit_after`). Buyers of one hot lot then hold
its row lock for the server's time only; these tests show what the sale relies on: the COMMIT
leaves before any answer to the takes comes back, and a take that fails commits nothing."""

import asyncio
import tempfile
from collections.abc import Callable

import pytest
from psycopg import pq
from sqlalchemy import text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.db import async_sessions, get_sessionmaker, make_async_engine, session_scope
from stores import allocation
from stores.allocation import LineRequest
from tests.factories import make_lot, make_product, make_store


def _a_lot(on_hand: int = 5) -> tuple[int, int, int]:
    """(store id, product id, lot id) of a lot holding `on_hand` units, committed."""
    with session_scope() as s:
        store = make_store(s)
        product = make_product(s, name="Mask pack")
        lot = make_lot(s, store, product, on_hand=on_hand)
        return store.id, product.id, lot.id


def _stock(lot_id: int) -> tuple[int, str]:
    """(reserved units, its store's name) of the lot, read in a transaction of its own."""
    with session_scope() as s:
        return tuple(
            s.execute(
                text(
                    "SELECT l.reserved, s.name FROM lots AS l JOIN stores AS s ON s.id = l.store_id "
                    "WHERE l.id = :id"
                ),
                {"id": lot_id},
            ).one()
        )


def _plan_and_take(
    store_id: int,
    product_id: int,
    lot_id: int,
    units: int,
    meanwhile: Callable[[], None] | None = None,
    name: str = "Written",
) -> Callable[[Session], None]:
    """The work of a placement on a session: a write first (the store's name, standing for the
    order's rows), the plan, what happens `meanwhile` elsewhere, then the take and the commit."""

    def work(session: Session) -> None:
        session.execute(text("UPDATE stores SET name = 'Written' WHERE id = :id"), {"id": store_id})
        stock = allocation.StockLast()
        stock(
            session,
            store_id,
            [LineRequest(product_id, units)],
            min_expiry=clock.today("Asia/Shanghai"),
        )
        if meanwhile is not None:
            meanwhile()
        stock.take_and_commit(session)

    return work


def _sell(lot_id: int, units: int) -> Callable[[], None]:
    """Another buyer reserving `units` of the lot, committed."""

    def sell() -> None:
        with session_scope() as other:
            other.execute(
                text("UPDATE lots SET reserved = reserved + :n WHERE id = :id"),
                {"id": lot_id, "n": units},
            )

    return sell


def _traced(session: Session, work: Callable[[Session], None]) -> list[str]:
    """Run `work` on the session; return the protocol messages its connection exchanged."""
    driver = session.connection().connection.driver_connection
    # Sent as text, not as a statement the connection prepared earlier (only its name would show).
    threshold, driver.prepare_threshold = driver.prepare_threshold, None
    with tempfile.TemporaryFile("w+") as trace:
        driver.pgconn.trace(trace.fileno())
        driver.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work(session)
        finally:
            driver.pgconn.untrace()
            driver.prepare_threshold = threshold
        trace.seek(0)
        return trace.read().splitlines()


def _commit_left_before_the_take_was_answered(messages: list[str]) -> bool:
    take = next(i for i, m in enumerate(messages) if m.startswith("F") and "take_lot" in m)
    commit = next(
        i for i, m in enumerate(messages[take:], take) if m.startswith("F") and '"COMMIT"' in m
    )
    answered = next(i for i, m in enumerate(messages[take:], take) if m.startswith("B"))
    return commit < answered


def test_the_take_and_the_commit_leave_together_and_are_committed(committed):
    store_id, product_id, lot_id = _a_lot(on_hand=5)
    session = get_sessionmaker()()
    try:
        messages = _traced(session, _plan_and_take(store_id, product_id, lot_id, 2))
    finally:
        session.close()

    assert _commit_left_before_the_take_was_answered(messages), "\n".join(messages)
    assert _stock(lot_id) == (2, "Written")


def test_a_lot_that_ran_dry_since_its_plan_commits_nothing(committed):
    store_id, product_id, lot_id = _a_lot(on_hand=5)
    _, name = _stock(lot_id)
    session = get_sessionmaker()()
    try:
        with pytest.raises(allocation.StockMoved) as moved:
            # Another buyer takes 4 of the 5 units between this plan (2 units) and its take.
            _plan_and_take(store_id, product_id, lot_id, 2, meanwhile=_sell(lot_id, 4))(session)
        session.rollback()
        # The session goes on: its next transaction works.
        assert (
            session.execute(
                text("SELECT reserved FROM lots WHERE id = :id"), {"id": lot_id}
            ).scalar()
            == 4
        )
    finally:
        session.close()

    assert moved.value.args == (lot_id,)
    # The other buyer's 4 units, and neither this one's 2 nor its earlier write.
    assert _stock(lot_id) == (4, name)


def test_on_the_async_engine_the_take_and_the_commit_leave_together_and_a_dry_lot_commits_nothing(
    committed,
):
    store_id, product_id, lot_id = _a_lot(on_hand=5)
    _, name = _stock(lot_id)

    async def run() -> tuple[list[str], BaseException | None, tuple[int, int]]:
        engine = make_async_engine(get_settings())
        try:
            async with async_sessions(engine)() as session:
                messages = await session.run_sync(
                    _traced, _plan_and_take(store_id, product_id, lot_id, 2)
                )
            after_first = _stock(lot_id)
            async with async_sessions(engine)() as session:
                try:
                    # 2 more planned of the 3 left; another buyer takes 2 of them meanwhile.
                    await session.run_sync(
                        _plan_and_take(
                            store_id, product_id, lot_id, 2, _sell(lot_id, 2), name="Not written"
                        )
                    )
                except allocation.StockMoved as exc:
                    moved: BaseException | None = exc
                else:
                    moved = None
                await session.rollback()
            return messages, moved, after_first
        finally:
            await engine.dispose()

    messages, moved, after_first = asyncio.run(run())

    assert _commit_left_before_the_take_was_answered(messages), "\n".join(messages)
    assert after_first == (2, "Written")
    assert isinstance(moved, allocation.StockMoved)
    assert _stock(lot_id) == (4, "Written")


def test_a_session_in_its_callers_transaction_takes_and_commits_in_turn_inside_it(db):
    # The tests' session (bound to a connection whose transaction the test rolls back): its
    # commit releases a savepoint, and the take must not send a COMMIT that would end the
    # test's transaction.
    store = make_store(db)
    product = make_product(db, name="Mask pack")
    lot = make_lot(db, store, product, on_hand=5)
    db.commit()

    messages = _traced(db, _plan_and_take(store.id, product.id, lot.id, 2))

    assert not any('"COMMIT"' in m for m in messages), "\n".join(messages)
    assert db.connection().in_transaction()
    assert (
        db.execute(text("SELECT reserved FROM lots WHERE id = :id"), {"id": lot.id}).scalar() == 2
    )
