"""The flash-sale reservation (one conditional UPDATE per lot, the locked choice when a lot ran
dry in between) sells out exactly under a real race: threads, each in its own committed
transaction against real PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from o2o import clock
from o2o.db import session_scope
from stores import allocation
from stores.models import Lot
from tests.factories import make_lot, make_product, make_store, offset

pytestmark = pytest.mark.slow


def _race(store_id: int, product_id: int, quantities: list[int]) -> list[int]:
    """Reserve each quantity from its own thread and transaction at once; return what each got."""
    start = threading.Barrier(len(quantities))
    min_expiry = clock.today("UTC") + timedelta(days=30)

    def buy(quantity: int) -> int:
        start.wait()
        try:
            with session_scope() as s:
                got = allocation.reserve_lines(
                    s,
                    store_id,
                    [allocation.LineRequest(product_id, quantity)],
                    min_expiry=min_expiry,
                )
                return sum(a.quantity for a in got[product_id])
        except allocation.InsufficientStock:
            return 0

    with ThreadPoolExecutor(max_workers=len(quantities)) as pool:
        return list(pool.map(buy, quantities))


def _lots(product_id: int) -> list[Lot]:
    with session_scope() as s:
        return list(s.scalars(select(Lot).where(Lot.product_id == product_id).order_by(Lot.id)))


def test_forty_buyers_of_one_unit_sell_three_small_lots_out_exactly(committed):
    with session_scope() as s:
        store = make_store(s, at=offset(300, 0))
        product = make_product(s)
        # Three lots of 5; the first to expire is sold first, and one expiring too soon is never
        # touched.
        for days in (200, 100, 300):
            make_lot(s, store, product, on_hand=5, days=days)
        make_lot(s, store, product, on_hand=50, days=10)
        store_id, product_id = store.id, product.id

    got = _race(store_id, product_id, [1] * 40)

    assert sum(got) == 15 and got.count(1) == 15
    lots = _lots(product_id)
    assert [lot.reserved for lot in lots] == [5, 5, 5, 0]


def test_mixed_quantities_never_oversell_and_stop_only_when_too_few_units_are_left(committed):
    with session_scope() as s:
        store = make_store(s, at=offset(300, 0))
        product = make_product(s)
        for days in (100, 120, 140, 160):
            make_lot(s, store, product, on_hand=7, days=days)
        store_id, product_id = store.id, product.id

    # 60 buyers asking for 1 to 3 units each: 120 units wanted, 28 on hand.
    quantities = [1 + i % 3 for i in range(60)]
    got = _race(store_id, product_id, quantities)

    lots = _lots(product_id)
    assert all(lot.reserved <= lot.on_hand for lot in lots)
    # Every unit reserved belongs to a buyer who got all they asked for, and nobody got a part.
    assert sum(lot.reserved for lot in lots) == sum(got)
    assert all(g in (0, q) for g, q in zip(got, quantities, strict=True))
    # Exact: once refusals started, fewer units were left than the smallest refused ask ... and
    # the one-unit buyers are refused only when nothing at all is left.
    left = sum(lot.on_hand - lot.reserved for lot in lots)
    refused = [q for g, q in zip(got, quantities, strict=True) if g == 0]
    assert left < min(refused)


def test_a_lot_emptied_between_the_read_and_the_update_is_chosen_again_under_lock(committed):
    with session_scope() as s:
        store = make_store(s, at=offset(300, 0))
        product = make_product(s)
        first = make_lot(s, store, product, on_hand=3, days=100)
        second = make_lot(s, store, product, on_hand=10, days=200)
        store_id, product_id, first_id, second_id = store.id, product.id, first.id, second.id

    min_expiry = clock.today("UTC") + timedelta(days=30)
    with session_scope() as s:
        # What the unlocked read saw (3 units in the first lot) is gone by the UPDATE: another
        # transaction took 2 of them in between.
        real_execute = s.execute
        emptied = []

        def execute(statement, *args, **kwargs):
            if "take_lot(" in str(statement) and not emptied:
                with session_scope() as other:
                    other.execute(
                        text("UPDATE lots SET reserved = reserved + 2 WHERE id = :id"),
                        {"id": first_id},
                    )
                emptied.append(True)
            return real_execute(statement, *args, **kwargs)

        s.execute = execute
        got = allocation.reserve_lines(
            s, store_id, [allocation.LineRequest(product_id, 3)], min_expiry=min_expiry
        )

    assert emptied
    # FEFO on what is there now: the 1 unit left in the first lot, 2 from the second.
    assert [(a.lot_id, a.quantity) for a in got[product_id]] == [(first_id, 1), (second_id, 2)]
    assert [lot.reserved for lot in _lots(product_id)] == [3, 2]
