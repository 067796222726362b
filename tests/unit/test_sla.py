"""SLA rules: predicted finish by phase, at risk and breached, priority, compensation."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch import sla
from dispatch.eta import EtaModel

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STORE = EtaModel(prep_minutes=10, courier_speed_kmh=18, detour_factor=1.35)  # 300 m/min / 1.35
ASSUME = sla.Assumptions(courier_wait_minutes=8, handover_minutes=2)


@pytest.mark.parametrize(
    ("phase", "kwargs", "expected"),
    [
        # 2000 m to the door = 9 minutes; handover 2.
        (sla.Phase.RELEASED, {}, 10 + 8 + 9 + 2),
        (sla.Phase.PREPARING, {"minutes_since_release": 4}, 6 + 8 + 9 + 2),
        (sla.Phase.PREPARING, {"minutes_since_release": 40}, 0 + 8 + 9 + 2),
        (sla.Phase.AWAITING_COURIER, {}, 8 + 9 + 2),
        (sla.Phase.CLAIMED, {"courier_to_store_m": 1000}, 4.5 + 9 + 2),
        (sla.Phase.CLAIMED, {}, 8 + 9 + 2),
        (sla.Phase.PICKED_UP, {"courier_to_dropoff_m": 1000}, 4.5 + 2),
        (sla.Phase.PICKED_UP, {"minutes_since_pickup": 3}, 6 + 2),
        (sla.Phase.PICKED_UP, {"minutes_since_pickup": 30}, 0 + 2),
    ],
)
def test_remaining_minutes_by_phase(phase, kwargs, expected):
    got = sla.remaining_minutes(phase, STORE, ASSUME, store_to_dropoff_m=2000, **kwargs)
    assert got == pytest.approx(expected)


def test_assess_breached_at_risk_on_track():
    deadline = NOW + timedelta(minutes=30)
    margin = 15
    assert (
        sla.assess(NOW, deadline, NOW + timedelta(minutes=10), margin_minutes=margin)
        is sla.Risk.ON_TRACK
    )
    assert (
        sla.assess(NOW, deadline, NOW + timedelta(minutes=16), margin_minutes=margin)
        is sla.Risk.AT_RISK
    )
    assert (
        sla.assess(NOW, deadline, NOW + timedelta(minutes=45), margin_minutes=margin)
        is sla.Risk.AT_RISK
    )
    later = deadline + timedelta(seconds=1)
    assert sla.assess(later, deadline, later, margin_minutes=margin) is sla.Risk.BREACHED


@given(
    remaining=st.floats(0, 600, allow_nan=False),
    minutes_left=st.floats(-120, 240, allow_nan=False),
    margin=st.integers(0, 60),
)
def test_assess_is_monotonic_in_the_prediction(remaining, minutes_left, margin):
    deadline = NOW + timedelta(minutes=minutes_left)
    risk = sla.assess(NOW, deadline, NOW + timedelta(minutes=remaining), margin_minutes=margin)
    worse = sla.assess(NOW, deadline, NOW + timedelta(minutes=remaining + 5), margin_minutes=margin)
    order = [sla.Risk.ON_TRACK, sla.Risk.AT_RISK, sla.Risk.BREACHED]
    assert order.index(worse) >= order.index(risk)
    assert sla.priority_for(worse) >= sla.priority_for(risk)


def test_priority_rises_with_risk():
    assert [sla.priority_for(r) for r in sla.Risk] == [0, 1, 2]


@pytest.mark.parametrize(
    ("policy", "fee", "subtotal", "fixed", "expected"),
    [
        ("waive_delivery_fee", 500, 3700, 0, 500),
        ("waive_delivery_fee", 0, 3700, 0, 0),
        ("fixed", 500, 3700, 1000, 1000),
        ("fixed", 500, 300, 10_000, 800),  # never more than the order's total
        ("none", 500, 3700, 1000, 0),
    ],
)
def test_compensation_policies(policy, fee, subtotal, fixed, expected):
    got = sla.compensation_minor(
        policy, delivery_fee_minor=fee, subtotal_minor=subtotal, fixed_minor=fixed
    )
    assert got == expected
    assert isinstance(got, int)


def test_an_unknown_policy_is_an_error():
    with pytest.raises(ValueError):
        sla.compensation_minor("double_refund", delivery_fee_minor=1, subtotal_minor=1)


def test_on_time_includes_the_deadline_itself():
    assert sla.is_on_time(NOW, NOW)
    assert not sla.is_on_time(NOW + timedelta(microseconds=1), NOW)
