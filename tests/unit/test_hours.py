import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stores.hours import is_open_at, next_opening, parse_hours, stored_open_state, stored_week

SHANGHAI = "Asia/Shanghai"  # UTC+8, no daylight saving
BERLIN = "Europe/Berlin"  # CET/CEST: clocks go forward 2026-03-29, back 2026-10-25

WEEKDAYS_8_TO_22 = [{"weekday": d, "opens": "08:00", "closes": "22:00"} for d in range(5)]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 2026-11-23 is a Monday.
@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2026, 11, 23, 0, 0), True),  # 08:00 in Shanghai: opening minute
        (utc(2026, 11, 22, 23, 59), False),  # Monday 07:59
        (utc(2026, 11, 23, 13, 59), True),  # 21:59
        (utc(2026, 11, 23, 14, 0), False),  # 22:00: closed at the closing minute
    ],
)
def test_open_between_opens_and_closes_local_time(at, open_):
    assert is_open_at(WEEKDAYS_8_TO_22, SHANGHAI, at) is open_


def test_none_means_always_open_and_never_waits():
    at = utc(2026, 11, 28, 19, 0)  # Sunday 03:00 in Shanghai
    assert is_open_at(None, SHANGHAI, at) is True
    assert next_opening(None, SHANGHAI, at) is None


def test_closed_days_wait_for_monday():
    saturday_noon = utc(2026, 11, 28, 4, 0)
    assert is_open_at(WEEKDAYS_8_TO_22, SHANGHAI, saturday_noon) is False
    assert next_opening(WEEKDAYS_8_TO_22, SHANGHAI, saturday_noon) == utc(2026, 11, 30, 0, 0)


def test_after_closing_opens_next_morning():
    monday_late = utc(2026, 11, 23, 15, 0)  # 23:00 local
    assert next_opening(WEEKDAYS_8_TO_22, SHANGHAI, monday_late) == utc(2026, 11, 24, 0, 0)


def test_open_store_has_no_next_opening():
    assert next_opening(WEEKDAYS_8_TO_22, SHANGHAI, utc(2026, 11, 23, 4, 0)) is None


def test_next_opening_is_utc_aware():
    opens = next_opening(WEEKDAYS_8_TO_22, SHANGHAI, utc(2026, 11, 28, 4, 0))
    assert opens.utcoffset() == timedelta(0)


def test_the_only_opening_a_week_later_is_found():
    hours = [{"weekday": 0, "opens": "08:00", "closes": "09:00"}]
    after_it = utc(2026, 11, 23, 2, 0)  # Monday 10:00 local
    assert next_opening(hours, SHANGHAI, after_it) == utc(2026, 11, 30, 0, 0)


def test_empty_week_never_opens():
    assert is_open_at([], SHANGHAI, utc(2026, 11, 23, 4, 0)) is False
    assert next_opening([], SHANGHAI, utc(2026, 11, 23, 4, 0)) is None


OVERNIGHT_FRIDAY = [{"weekday": 4, "opens": "20:00", "closes": "02:00"}]


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2026, 11, 27, 12, 0), True),  # Friday 20:00
        (utc(2026, 11, 27, 17, 30), True),  # Saturday 01:30, on Friday's hours
        (utc(2026, 11, 27, 18, 0), False),  # Saturday 02:00
        (utc(2026, 11, 28, 12, 30), False),  # Saturday 20:30: Saturday has no hours
        (utc(2026, 11, 26, 17, 30), False),  # Friday 01:30: Thursday had no hours
    ],
)
def test_overnight_hours_run_past_midnight_into_the_next_day(at, open_):
    assert is_open_at(OVERNIGHT_FRIDAY, SHANGHAI, at) is open_


def test_sunday_overnight_runs_into_monday():
    hours = [{"weekday": 6, "opens": "22:00", "closes": "06:00"}]
    monday_3am = utc(2026, 11, 22, 19, 0)
    assert is_open_at(hours, SHANGHAI, monday_3am) is True


def test_end_of_day_closes_at_midnight():
    hours = [{"weekday": 0, "opens": "00:00", "closes": "24:00"}]
    assert is_open_at(hours, SHANGHAI, utc(2026, 11, 23, 15, 59)) is True  # Mon 23:59
    assert is_open_at(hours, SHANGHAI, utc(2026, 11, 23, 16, 0)) is False  # Tue 00:00


def test_wall_clock_hours_follow_daylight_saving():
    daily_8_to_20 = [{"weekday": d, "opens": "08:00", "closes": "20:00"} for d in range(7)]
    # 18:30 UTC is 19:30 in winter (CET, open) and 20:30 in summer (CEST, closed).
    assert is_open_at(daily_8_to_20, BERLIN, utc(2026, 3, 28, 18, 30)) is True
    assert is_open_at(daily_8_to_20, BERLIN, utc(2026, 3, 30, 18, 30)) is False
    # The next morning's opening is 08:00 local either way: 07:00 UTC in winter, 06:00 in summer.
    assert next_opening(daily_8_to_20, BERLIN, utc(2026, 3, 28, 20, 0)) == utc(2026, 3, 29, 6, 0)
    assert next_opening(daily_8_to_20, BERLIN, utc(2026, 10, 24, 20, 0)) == utc(2026, 10, 25, 7, 0)


def test_overnight_across_spring_forward_closes_at_local_six():
    # Saturday 22:00 CET to Sunday 06:00 CEST is 7 hours, not 8: 04:00 UTC is the closing time.
    hours = [{"weekday": 5, "opens": "22:00", "closes": "06:00"}]
    assert is_open_at(hours, BERLIN, utc(2026, 3, 29, 3, 59)) is True
    assert is_open_at(hours, BERLIN, utc(2026, 3, 29, 4, 0)) is False


def test_overnight_across_fall_back_closes_at_local_six():
    # Saturday 22:00 CEST to Sunday 06:00 CET is 9 hours: open until 05:00 UTC.
    hours = [{"weekday": 5, "opens": "22:00", "closes": "06:00"}]
    assert is_open_at(hours, BERLIN, utc(2026, 10, 25, 4, 30)) is True
    assert is_open_at(hours, BERLIN, utc(2026, 10, 25, 5, 0)) is False


def test_opening_inside_the_skipped_hour_opens_when_clocks_resume():
    # 02:30 does not exist on 2026-03-29 in Berlin; the store opens at 03:30 CEST (01:30 UTC).
    hours = [{"weekday": 6, "opens": "02:30", "closes": "05:00"}]
    assert next_opening(hours, BERLIN, utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 30)
    assert is_open_at(hours, BERLIN, utc(2026, 3, 29, 1, 30)) is True


def test_naive_instant_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open_at(WEEKDAYS_8_TO_22, SHANGHAI, datetime(2026, 11, 23, 9, 0))


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([{"weekday": 7, "opens": "08:00", "closes": "22:00"}], "weekday"),
        ([{"weekday": True, "opens": "08:00", "closes": "22:00"}], "weekday"),
        ([{"weekday": 0, "opens": "8:00", "closes": "22:00"}], "opens"),
        ([{"weekday": 0, "opens": "24:00", "closes": "22:00"}], "opens"),
        ([{"weekday": 0, "opens": "08:00", "closes": "22:60"}], "closes"),
        ([{"weekday": 0, "opens": "08:00", "closes": "08:00"}], "00:00 to 24:00"),
        ([{"weekday": 0, "opens": "08:00"}], "closes"),
        (["08:00-22:00"], "object"),
        (
            [
                {"weekday": 0, "opens": "08:00", "closes": "14:00"},
                {"weekday": 0, "opens": "13:00", "closes": "20:00"},
            ],
            "overlap",
        ),
        (
            [
                {"weekday": 6, "opens": "22:00", "closes": "06:00"},
                {"weekday": 0, "opens": "05:00", "closes": "12:00"},
            ],
            "overlap",
        ),
        ([{"weekday": 0, "opens": "08:00", "closes": "09:00"}] * 51, "at most"),
    ],
)
def test_bad_hours_are_refused_with_the_reason(entries, reason):
    with pytest.raises(ValueError, match=reason):
        parse_hours(entries)


def test_adjacent_intervals_are_not_an_overlap():
    hours = [
        {"weekday": 0, "opens": "00:00", "closes": "24:00"},
        {"weekday": 1, "opens": "00:00", "closes": "12:00"},
        {"weekday": 6, "opens": "12:00", "closes": "24:00"},
    ]
    assert len(parse_hours(hours)) == 3


@given(
    weekday=st.integers(0, 6),
    opens=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 24 * 60 - 1),
    probe=st.integers(0, 14 * 24 * 60),
)
def test_next_opening_is_a_moment_the_store_is_open_and_closed_just_before(
    weekday, opens, length, probe
):
    closes = (opens + length) % (24 * 60)
    hours = [
        {
            "weekday": weekday,
            "opens": f"{opens // 60:02d}:{opens % 60:02d}",
            "closes": f"{closes // 60:02d}:{closes % 60:02d}",
        }
    ]
    at = utc(2026, 11, 23) + timedelta(minutes=probe)
    opening = next_opening(hours, SHANGHAI, at)
    if is_open_at(hours, SHANGHAI, at):
        assert opening is None
    else:
        assert at < opening <= at + timedelta(days=7)
        assert is_open_at(hours, SHANGHAI, opening)
        assert not is_open_at(hours, SHANGHAI, opening - timedelta(minutes=1))


def _week(draws: list[tuple[int, int, int]]) -> list[dict]:
    """A valid week from (weekday, opens, length) draws: each kept unless it overlaps one kept."""
    kept: list[dict] = []
    for weekday, opens, length in draws:
        closes = (opens + length) % (24 * 60)
        entry = {
            "weekday": weekday,
            "opens": f"{opens // 60:02d}:{opens % 60:02d}",
            "closes": "24:00" if closes == 0 else f"{closes // 60:02d}:{closes % 60:02d}",
        }
        try:
            parse_hours([*kept, entry])
        except ValueError:
            continue
        kept.append(entry)
    return kept


def open_state(opening_hours: list[dict] | None, tz: str, at):
    """The nearby list's answer for hours as the database stores them (JSON text, or NULL)."""
    stored = None if opening_hours is None else json.dumps(opening_hours)
    return stored_open_state(stored_week(stored), tz, at)


@given(
    draws=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 24 * 60 - 1), st.integers(1, 24 * 60 - 1)),
        max_size=9,
    ),
    # East and west of UTC, with and without daylight saving.
    tz=st.sampled_from(["Asia/Shanghai", "America/New_York", "Europe/London", "Pacific/Auckland"]),
    # Around the year, daylight-saving changes included, to the second.
    probe_s=st.integers(0, 366 * 24 * 3600),
)
def test_the_nearby_lists_open_state_answers_as_is_open_at_and_next_opening(draws, tz, probe_s):
    hours = _week(draws)
    at = utc(2026, 1, 1) + timedelta(seconds=probe_s)
    assert open_state(hours, tz, at) == (is_open_at(hours, tz, at), next_opening(hours, tz, at))


def test_open_state_of_a_store_always_open_and_one_that_never_opens():
    at = utc(2026, 11, 23, 3)
    assert open_state(None, SHANGHAI, at) == (True, None)
    assert open_state([], SHANGHAI, at) == (False, None)
