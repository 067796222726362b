"""The members' level rules and the ABC rule as plain code."""

from hypothesis import given
from hypothesis import strategies as st

from o2o.analytics import abc
from o2o.members import levels

LADDER = levels.ladder(100_000, 300_000, 800_000)


def test_levels_by_spend_and_what_the_next_one_takes():
    assert levels.level_for(0, LADDER).name == "member"
    assert levels.level_for(99_999, LADDER).name == "member"
    assert levels.level_for(100_000, LADDER).name == "silver"
    assert levels.level_for(300_000, LADDER).name == "gold"
    assert levels.level_for(10**9, LADDER).name == "platinum"
    level, needed = levels.next_level(250_000, LADDER)
    assert (level.name, needed) == ("gold", 50_000)
    assert levels.next_level(800_000, LADDER) is None


def test_free_delivery_from_the_configured_level_up():
    assert not levels.has_free_delivery("silver", "gold")
    assert levels.has_free_delivery("gold", "gold")
    assert levels.has_free_delivery("platinum", "gold")
    assert not levels.has_free_delivery("platinum", "none")
    assert [b.code for b in levels.benefits("gold", "gold")] == ["points", "free_delivery"]


def test_points_are_whole_units_rounded_down():
    assert levels.points_for(2499, 1) == 24
    assert levels.points_for(2500, 2) == 50
    assert levels.points_for(-100, 1) == 0


def test_abc_hand_computed():
    # 500, 300, 100, 60, 40: above each 0%, 50%, 80%, 90%, 96% of 1000.
    values = [(1, 500), (2, 300), (3, 100), (4, 60), (5, 40), (6, 0)]
    assert abc.classify(values) == {1: "A", 2: "A", 3: "B", 4: "B", 5: "C", 6: "C"}


def test_one_product_making_almost_everything_is_a():
    assert abc.classify([(1, 990), (2, 10)]) == {1: "A", 2: "C"}


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40))
def test_classes_never_improve_down_the_ranking(values):
    classes = abc.classify(list(enumerate(values)))
    ranked = sorted(enumerate(values), key=lambda pv: (-pv[1], pv[0]))
    order = [classes[pid] for pid, _ in ranked]
    assert order == sorted(order)
    # The A products alone never make less than 80% of sales (when anything sold).
    total = sum(values)
    if total:
        a_sales = sum(v for pid, v in ranked if classes[pid] == "A")
        assert a_sales * 100 >= total * 80
