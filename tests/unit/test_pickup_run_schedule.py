"""The run schedule of a pickup point (pure): the first departure an order can still make."""

from datetime import UTC, datetime, timedelta

import pytest

from stores.pickup_points import next_run

SHANGHAI = "Asia/Shanghai"
TIMES = ["10:00", "15:00", "19:00"]


def _at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    """An instant given in Shanghai local time (UTC+8, no DST)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


@pytest.mark.parametrize(
    ("now", "departs"),
    [
        (_at(8, 0), _at(10, 0)),
        (_at(9, 20), _at(10, 0)),  # exactly the cut-off: still on the 10:00 run
        (_at(9, 21), _at(15, 0)),
        (_at(18, 30), _at(10, 0, day=11)),  # the 19:00 run has closed: tomorrow morning
        (_at(23, 59), _at(10, 0, day=11)),
    ],
)
def test_the_first_run_the_order_can_make(now, departs):
    slot = next_run(TIMES, SHANGHAI, now=now, cutoff_minutes=40, travel_minutes=7)
    assert slot.departs_at == departs
    assert slot.arrives_at == departs + timedelta(minutes=7)


def test_run_times_in_any_order_and_a_daylight_saving_zone():
    # New York springs forward on 8 March 2026: 10:00 local is 14:00 UTC after, 15:00 UTC before.
    before = next_run(
        ["15:00", "10:00"],
        "America/New_York",
        now=datetime(2026, 3, 7, 12, 0, tzinfo=UTC),
        cutoff_minutes=30,
        travel_minutes=5,
    )
    after = next_run(
        ["15:00", "10:00"],
        "America/New_York",
        now=datetime(2026, 3, 9, 12, 0, tzinfo=UTC),
        cutoff_minutes=30,
        travel_minutes=5,
    )
    assert before.departs_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    assert after.departs_at == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)


def test_a_point_without_run_times_is_refused():
    with pytest.raises(ValueError):
        next_run([], SHANGHAI, now=_at(8), cutoff_minutes=40, travel_minutes=7)
