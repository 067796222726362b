"""The dispatch ETA model: travel by distance, detour and speed; the phases add up; calibration."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.eta import EtaModel, calibrated_speed_kmh

STORE = EtaModel(prep_minutes=10, courier_speed_kmh=18, detour_factor=1.35)


def test_travel_is_distance_times_detour_over_speed():
    # 18 km/h is 300 m a minute; 2 km with a 1.35 detour is 2.7 km: 9 minutes.
    assert STORE.travel_minutes(2000) == pytest.approx(9.0)
    assert STORE.travel_minutes(0) == 0


def test_delivery_adds_preparation_the_way_to_the_store_and_the_way_to_the_door():
    assert STORE.delivery_minutes(2000, courier_to_store_m=1000) == pytest.approx(10 + 4.5 + 9)
    # No courier yet: the assumed wait stands for their way to the store.
    assert STORE.delivery_minutes(2000, courier_wait_minutes=7) == pytest.approx(10 + 7 + 9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prep_minutes": 10, "courier_speed_kmh": 0, "detour_factor": 1.2},
        {"prep_minutes": 10, "courier_speed_kmh": 18, "detour_factor": 0.9},
        {"prep_minutes": -1, "courier_speed_kmh": 18, "detour_factor": 1.2},
    ],
)
def test_impossible_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        EtaModel(**kwargs)


def test_a_negative_distance_is_refused():
    with pytest.raises(ValueError):
        STORE.travel_minutes(-1)


@given(
    a=st.floats(0, 50_000, allow_nan=False),
    b=st.floats(0, 50_000, allow_nan=False),
    speed=st.floats(5, 60),
    detour=st.floats(1, 2),
)
def test_travel_grows_with_distance_and_detour_and_shrinks_with_speed(a, b, speed, detour):
    model = EtaModel(prep_minutes=0, courier_speed_kmh=speed, detour_factor=detour)
    near, far = sorted((a, b))
    assert model.travel_minutes(near) <= model.travel_minutes(far)
    slower = EtaModel(prep_minutes=0, courier_speed_kmh=speed / 2, detour_factor=detour)
    assert slower.travel_minutes(far) >= model.travel_minutes(far)


def test_calibration_takes_the_median_speed_once_there_is_enough_history():
    # 3 km straight, 1.35 detour: 4.05 km road; in 13.5 minutes that is 18 km/h.
    trips = [(3000.0, 13.5)] * 15 + [(3000.0, 27.0)] * 4 + [(3000.0, 90.0)]  # one long lunch
    assert calibrated_speed_kmh(trips, detour_factor=1.35, prior_kmh=15) == pytest.approx(18.0)
    assert calibrated_speed_kmh(trips[:5], detour_factor=1.35, prior_kmh=15) == 15
    assert calibrated_speed_kmh([(0, 5), (100, 0)] * 20, detour_factor=1.35, prior_kmh=15) == 15
