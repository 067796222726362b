"""FEFO lot choice: pure, no database."""

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stores.allocation import InsufficientStock, LotStock, Shortage, allocated, choose_lots

TODAY = date(2026, 11, 23)
MIN_EXPIRY = TODAY + timedelta(days=30)


def lot(lot_id: int, days: int, available: int, price: int = 100) -> LotStock:
    return LotStock(lot_id, TODAY + timedelta(days=days), available, price)


def test_earliest_expiry_is_used_first():
    lots = [lot(1, 300, 5), lot(2, 60, 5), lot(3, 120, 5)]
    chosen = choose_lots(lots, 7, min_expiry=MIN_EXPIRY)
    assert [(a.lot_id, a.quantity) for a in chosen] == [(2, 5), (3, 2)]


def test_lots_expiring_within_the_shelf_life_are_never_sold():
    lots = [lot(1, 10, 50), lot(2, 29, 50), lot(3, 30, 1), lot(4, 400, 1)]
    chosen = choose_lots(lots, 5, min_expiry=MIN_EXPIRY)
    assert [(a.lot_id, a.quantity) for a in chosen] == [(3, 1), (4, 1)]
    assert allocated(chosen) == 2


def test_a_longer_minimum_expiry_skips_lots_that_end_before_the_course():
    lots = [lot(1, 40, 10), lot(2, 200, 10)]
    chosen = choose_lots(lots, 3, min_expiry=TODAY + timedelta(days=90))
    assert [(a.lot_id, a.quantity) for a in chosen] == [(2, 3)]


def test_empty_lots_are_skipped_and_same_expiry_breaks_ties_by_id():
    lots = [lot(5, 90, 2), lot(4, 90, 0), lot(3, 90, 2)]
    chosen = choose_lots(lots, 3, min_expiry=MIN_EXPIRY)
    assert [(a.lot_id, a.quantity) for a in chosen] == [(3, 2), (5, 1)]


def test_prices_follow_the_lot():
    chosen = choose_lots([lot(1, 60, 1, 900), lot(2, 90, 5, 1000)], 2, min_expiry=MIN_EXPIRY)
    assert [a.price_minor for a in chosen] == [900, 1000]


def test_all_or_nothing_chooses_fefo_among_lots_that_last_or_nothing():
    lots = [
        LotStock(1, date(2027, 1, 1), 10),  # too early
        LotStock(2, date(2027, 6, 1), 2),
        LotStock(3, date(2027, 3, 1), 1),
        LotStock(4, date(2027, 3, 1), 0),  # nothing left
    ]
    chosen = choose_lots(lots, 3, min_expiry=date(2027, 2, 1), all_or_nothing=True)
    assert [(a.lot_id, a.quantity) for a in chosen] == [(3, 1), (2, 2)]
    assert choose_lots(lots, 4, min_expiry=date(2027, 2, 1), all_or_nothing=True) == []


def test_quantity_must_be_positive():
    with pytest.raises(ValueError):
        choose_lots([lot(1, 60, 1)], 0, min_expiry=MIN_EXPIRY)


def test_insufficient_stock_lists_every_shortage_in_the_documented_shape():
    exc = InsufficientStock([Shortage(9, 2), Shortage(3, 1)])
    assert exc.status_code == 409
    assert exc.code == "insufficient_stock"
    assert exc.details == {
        "missing": [
            {"product_id": 3, "quantity_missing": 1},
            {"product_id": 9, "quantity_missing": 2},
        ]
    }


def test_insufficient_stock_names_the_items_when_the_caller_knows_their_names():
    names = {3: "Amoxicillin 500 mg"}
    exc = InsufficientStock([Shortage(3, 1)]).naming(names)
    assert exc.message == "Not enough stock for Amoxicillin 500 mg (1 short); nothing was reserved."
    assert exc.details == {
        "missing": [{"product_id": 3, "quantity_missing": 1, "name": "Amoxicillin 500 mg"}]
    }
    routed = InsufficientStock(
        [Shortage(3, 2)], message="No pharmacy near you has these items in stock."
    ).naming(names)
    assert routed.message == (
        "No pharmacy near you has these items in stock. Not enough: Amoxicillin 500 mg (2 short)."
    )


lots_strategy = st.lists(
    st.tuples(st.integers(-10, 400), st.integers(0, 20)), min_size=0, max_size=8
)


@given(lots_strategy, st.integers(1, 100))
def test_never_more_than_asked_or_held_and_only_fresh_lots(raw, quantity):
    lots = [lot(i + 1, days, avail) for i, (days, avail) in enumerate(raw)]
    chosen = choose_lots(lots, quantity, min_expiry=MIN_EXPIRY)
    by_id = {x.lot_id: x for x in lots}
    fresh_total = sum(x.available for x in lots if x.expiry_date >= MIN_EXPIRY)
    assert allocated(chosen) == min(quantity, fresh_total)
    for a in chosen:
        assert 0 < a.quantity <= by_id[a.lot_id].available
        assert by_id[a.lot_id].expiry_date >= MIN_EXPIRY
    assert len({a.lot_id for a in chosen}) == len(chosen)
    # FEFO: no unused fresh lot expires before a lot that was used.
    used = {a.lot_id for a in chosen}
    if chosen:
        latest_used = max(by_id[i].expiry_date for i in used)
        skipped = [
            x
            for x in lots
            if x.lot_id not in used and x.available > 0 and x.expiry_date >= MIN_EXPIRY
        ]
        assert all(x.expiry_date >= latest_used for x in skipped)
