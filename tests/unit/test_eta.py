"""The search ETA: preparation plus courier travel, rounded up to whole minutes."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stores.eta import delivery_eta_minutes, pickup_eta_minutes, travel_minutes


def test_delivery_adds_travel_at_courier_speed_with_detour():
    # 3 km x 1.5 detour = 4.5 km at 18 km/h = 15 minutes, after 10 minutes of preparation.
    assert delivery_eta_minutes(10, 3000, 1.5, 18) == 25


def test_travel_is_rounded_up_to_the_next_minute():
    # 100 m at 18 km/h (300 m/min) is a third of a minute: the courier still needs minute 1.
    assert delivery_eta_minutes(0, 100, 1.0, 18) == 1
    assert delivery_eta_minutes(5, 301, 1.0, 18) == 7


def test_exact_minutes_are_not_rounded_up_by_float_noise():
    # 6 km x 1.35 at 18 km/h is 27 minutes; float arithmetic gives 27.000000000000004.
    assert delivery_eta_minutes(10, 6000, 1.35, 18) == 37
    assert delivery_eta_minutes(0, 3000, 1.1, 18) == 11


def test_at_the_store_delivery_takes_only_preparation():
    assert delivery_eta_minutes(12, 0, 1.35, 18) == 12


def test_pickup_is_preparation_time():
    assert pickup_eta_minutes(15) == 15
    assert pickup_eta_minutes(0) == 0


@pytest.mark.parametrize(
    ("prep", "distance", "detour", "speed"),
    [
        (-1, 100, 1.0, 18),
        (10, -1, 1.0, 18),
        (10, math.inf, 1.0, 18),
        (10, math.nan, 1.0, 18),
        (10, 100, 0.9, 18),
        (10, 100, 1.0, 0),
        (10, 100, 1.0, -5),
    ],
)
def test_impossible_parameters_are_refused(prep, distance, detour, speed):
    with pytest.raises(ValueError):
        delivery_eta_minutes(prep, distance, detour, speed)


@given(
    prep=st.integers(0, 600),
    distance=st.floats(0, 200_000),
    detour=st.floats(1, 3),
    speed=st.floats(1, 80),
)
def test_eta_never_beats_the_exact_travel_time(prep, distance, detour, speed):
    eta = delivery_eta_minutes(prep, distance, detour, speed)
    exact = prep + travel_minutes(distance, detour, speed)
    assert exact - 1e-6 <= eta < exact + 1


@given(distance=st.floats(0, 50_000), extra=st.floats(0, 50_000))
def test_farther_never_arrives_sooner(distance, extra):
    assert delivery_eta_minutes(10, distance, 1.35, 18) <= delivery_eta_minutes(
        10, distance + extra, 1.35, 18
    )
