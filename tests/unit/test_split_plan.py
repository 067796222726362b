"""The split planner against a brute-force oracle written independently here: every set of up to
three stores, the fewest that cover the cart, then the smallest total distance, then the smaller
farthest store, then the lower store ids."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stores.split_plan import Candidate, plan_split

PRODUCTS = (1, 2, 3, 4, 5)


def oracle(stores: list[Candidate], cart: dict[int, int]):
    """Return (store ids of the best plan, sorted) or None, by trying every set."""
    best = None
    for size in (1, 2, 3):
        for combo in itertools.combinations(stores, size):
            if not all(
                sum(min(s.available.get(p, 0), q) for s in combo) >= q for p, q in cart.items()
            ):
                continue
            distances = sorted(s.distance_m for s in combo)
            key = (sum(distances), distances[-1], tuple(sorted(s.store_id for s in combo)))
            if best is None or key < best:
                best = key
        if best is not None:
            return best
    return None


def stores_of(max_size: int):
    return st.lists(
        st.builds(
            lambda store_id, distance, stock: (store_id, distance, stock),
            st.integers(1, 10_000),
            # Whole metres, so sums are exact and ties really tie.
            st.integers(0, 5_000).map(float),
            st.dictionaries(st.sampled_from(PRODUCTS), st.integers(0, 6), max_size=5),
        ),
        max_size=max_size,
        unique_by=lambda t: t[0],
    )


stores_strategy = stores_of(12)
cart_strategy = st.dictionaries(
    st.sampled_from(PRODUCTS), st.integers(1, 8), min_size=1, max_size=5
)


@settings(max_examples=400, deadline=None)
@given(stores_strategy, cart_strategy)
def test_plan_is_the_oracles(raw, cart):
    stores = [Candidate(i, d, stock) for i, d, stock in raw]
    expected = oracle(stores, cart)
    plan = plan_split(stores, cart)
    if expected is None:
        assert plan is None
        return
    assert plan is not None
    ids = tuple(sorted(p.store_id for p in plan.parts))
    distances = sorted(p.distance_m for p in plan.parts)
    assert (sum(distances), distances[-1], ids) == expected
    # The parts fill the cart exactly, from stock each store holds, nearest part first.
    filled: dict[int, int] = {}
    by_id = {s.store_id: s for s in stores}
    for part in plan.parts:
        assert part.items, "every store of a fewest-store plan gets something"
        for product_id, quantity in part.items:
            assert 0 < quantity <= by_id[part.store_id].available[product_id]
            filled[product_id] = filled.get(product_id, 0) + quantity
    assert filled == cart
    assert [p.distance_m for p in plan.parts] == distances


@settings(max_examples=60, deadline=None)
@given(stores_of(30), cart_strategy)
def test_plan_is_the_oracles_among_many_stores(raw, cart):
    stores = [Candidate(i, d, stock) for i, d, stock in raw]
    expected = oracle(stores, cart)
    plan = plan_split(stores, cart)
    if expected is None:
        assert plan is None
    else:
        distances = sorted(p.distance_m for p in plan.parts)
        ids = tuple(sorted(p.store_id for p in plan.parts))
        assert (sum(distances), distances[-1], ids) == expected


def test_two_near_stores_beat_one_far_pair():
    stores = [
        Candidate(1, 100.0, {1: 2}),
        Candidate(2, 200.0, {2: 1}),
        Candidate(3, 50.0, {1: 2, 2: 1, 3: 0}),  # short of product 3
        Candidate(4, 900.0, {3: 5}),
        Candidate(5, 400.0, {3: 1}),
    ]
    plan = plan_split(stores, {1: 2, 2: 1, 3: 1})
    assert [(p.store_id, p.items) for p in plan.parts] == [(3, ((1, 2), (2, 1))), (5, ((3, 1),))]


def test_a_line_is_split_when_no_store_holds_all_of_it():
    plan = plan_split([Candidate(1, 10.0, {7: 3}), Candidate(2, 20.0, {7: 4})], {7: 5})
    assert [(p.store_id, p.items) for p in plan.parts] == [(1, ((7, 3),)), (2, ((7, 2),))]


def test_no_plan_of_three_stores_is_none():
    stores = [Candidate(i, float(i), {i: 1}) for i in range(1, 5)]
    assert plan_split(stores, {1: 1, 2: 1, 3: 1, 4: 1}) is None
    assert plan_split(stores, {1: 1, 2: 1, 3: 1}).store_count == 3


def test_an_empty_cart_is_refused():
    with pytest.raises(ValueError):
        plan_split([], {})
