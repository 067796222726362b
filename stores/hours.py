"""Opening hours: is a store open at an instant, and when does it open next (pure code).

Hours are a week of local wall-clock intervals in the store's IANA timezone:
`[{"weekday": 0..6 (Monday=0), "opens": "08:00", "closes": "22:00"}]`; `None` means always open.
A `closes` earlier than `opens` runs past midnight into the next day; `closes` may be "24:00" (end
of the day). Intervals are turned into UTC instants per calendar day, so daylight-saving changes
move the instants, never the wall-clock times the store keeps.
"""

import bisect
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
# More entries than this is a data error, not a real week (7 days x a few shifts).
MAX_INTERVALS = 50

_HHMM = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")
END_OF_DAY = "24:00"


@dataclass(frozen=True)
class OpeningInterval:
    """One opening: from `opens` (local) on `weekday`, for `minutes` of wall-clock time."""

    weekday: int
    opens: time
    minutes: int

    @property
    def week_start(self) -> int:
        return self.weekday * MINUTES_PER_DAY + self.opens.hour * 60 + self.opens.minute


def _minutes(hhmm: str) -> int:
    if hhmm == END_OF_DAY:
        return MINUTES_PER_DAY
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def parse_interval(entry: Mapping) -> OpeningInterval:
    """Turn one `{"weekday", "opens", "closes"}` entry into an interval; ValueError says why not."""
    if not isinstance(entry, Mapping):
        raise ValueError("each entry must be an object with weekday, opens and closes")
    weekday, opens, closes = entry.get("weekday"), entry.get("opens"), entry.get("closes")
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
        raise ValueError("weekday must be an integer from 0 (Monday) to 6 (Sunday)")
    if not isinstance(opens, str) or not _HHMM.match(opens):
        raise ValueError(f"opens must be a time HH:MM from 00:00 to 23:59, not {opens!r}")
    if not isinstance(closes, str) or not (_HHMM.match(closes) or closes == END_OF_DAY):
        raise ValueError(f"closes must be a time HH:MM from 00:00 to 24:00, not {closes!r}")
    start, end = _minutes(opens), _minutes(closes)
    if start == end:
        raise ValueError(f"opens and closes are both {opens}; write 00:00 to 24:00 for a whole day")
    minutes = end - start if end > start else end + MINUTES_PER_DAY - start
    return OpeningInterval(weekday, time(start // 60, start % 60), minutes)


def parse_hours(entries: Sequence[Mapping] | None) -> tuple[OpeningInterval, ...] | None:
    """Validate a week of hours (None = always open); ValueError names the first problem.

    Intervals may not overlap, also across midnight and from Sunday into Monday: overlapping
    hours are a data-entry mistake that would make "closes at" ambiguous.
    """
    if entries is None:
        return None
    if len(entries) > MAX_INTERVALS:
        raise ValueError(f"at most {MAX_INTERVALS} opening intervals are allowed")
    intervals = []
    for index, entry in enumerate(entries):
        try:
            intervals.append(parse_interval(entry))
        except ValueError as exc:
            raise ValueError(f"opening_hours[{index}]: {exc}") from None
    ordered = sorted(intervals, key=lambda i: i.week_start)
    for current, following in zip(ordered, ordered[1:] + ordered[:1], strict=True):
        gap = (following.week_start - current.week_start) % MINUTES_PER_WEEK
        if len(ordered) > 1 and current.minutes > gap:
            raise ValueError(
                f"opening hours overlap: weekday {current.weekday} from "
                f"{current.opens:%H:%M} runs into weekday {following.weekday} from "
                f"{following.opens:%H:%M}"
            )
    return tuple(intervals)


def _as_intervals(hours: Sequence[Mapping] | Sequence[OpeningInterval]) -> list[OpeningInterval]:
    return [h if isinstance(h, OpeningInterval) else parse_interval(h) for h in hours]


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    return at.astimezone(UTC)


def _windows(
    intervals: list[OpeningInterval], zone: ZoneInfo, local_day: date, days: range
) -> Iterator[tuple[datetime, datetime]]:
    """Yield the UTC (start, end) of each interval on the local days local_day + days."""
    for offset in days:
        day = local_day + timedelta(days=offset)
        for interval in intervals:
            if interval.weekday != day.weekday():
                continue
            # Wall-clock arithmetic (naive), then localised: 22:00 + 8 h is 06:00 on the
            # store's clock even on the night the clocks change.
            start = datetime.combine(day, interval.opens)
            end = start + timedelta(minutes=interval.minutes)
            yield (
                start.replace(tzinfo=zone).astimezone(UTC),
                end.replace(tzinfo=zone).astimezone(UTC),
            )


def is_open_at(
    hours: Sequence[Mapping] | Sequence[OpeningInterval] | None, tz: str, at: datetime
) -> bool:
    """Return whether a store with these hours in timezone tz is open at the instant `at`."""
    if hours is None:
        return True
    at_utc = _utc(at)
    zone = ZoneInfo(tz)
    local_day = at_utc.astimezone(zone).date()
    # Yesterday's overnight interval may still be running.
    return any(
        start <= at_utc < end
        for start, end in _windows(_as_intervals(hours), zone, local_day, range(-1, 1))
    )


def next_opening(
    hours: Sequence[Mapping] | Sequence[OpeningInterval] | None, tz: str, at: datetime
) -> datetime | None:
    """Return when a store closed at `at` opens next (UTC); None if it is open or never opens."""
    if hours is None or is_open_at(hours, tz, at):
        return None
    at_utc = _utc(at)
    zone = ZoneInfo(tz)
    local_day = at_utc.astimezone(zone).date()
    # Today up to the same weekday next week covers every interval of the week at least once.
    starts = (
        start
        for start, _ in _windows(_as_intervals(hours), zone, local_day, range(0, 8))
        if start > at_utc
    )
    return min(starts, default=None)


@functools.lru_cache(maxsize=4096)
def _intervals(week: tuple[tuple[int, str, str], ...]) -> tuple[OpeningInterval, ...]:
    return tuple(
        parse_interval({"weekday": weekday, "opens": opens, "closes": closes})
        for weekday, opens, closes in week
    )


@dataclass(frozen=True, eq=False)
class StoredWeek:
    """A store's hours as read from the database: the entries (shared between requests: read
    them, never change them) and the parsed week; None and None for a store always open.
    Compared and hashed by identity: `stored_week` gives one object per stored text."""

    entries: list[dict] | None
    week: tuple[OpeningInterval, ...] | None


@functools.lru_cache(maxsize=4096)
def stored_week(text: str | None) -> StoredWeek:
    """Read the `opening_hours` column as text (`opening_hours::text`): stores share a few weeks
    of hours, so each is decoded and parsed once per process, not once per store and request."""
    if text is None:
        return StoredWeek(None, None)
    entries = json.loads(text)
    if entries is None:
        return StoredWeek(None, None)
    return StoredWeek(
        entries, _intervals(tuple((e["weekday"], e["opens"], e["closes"]) for e in entries))
    )


@functools.lru_cache(maxsize=8192)
def _schedule(hours: StoredWeek, tz: str, local_day: date) -> tuple[tuple[datetime, datetime], ...]:
    """The UTC windows of a week of hours from the local day before local_day to a week after
    it, in start order: all that `is_open_at` and `next_opening` look at for an instant on
    local_day. Stores share a few weeks of hours and a city a few zones, so a day's schedule is
    worked out once per process, not once per store and request."""
    return tuple(sorted(_windows(list(hours.week or ()), ZoneInfo(tz), local_day, range(-1, 8))))


def stored_open_state(hours: StoredWeek, tz: str, at: datetime) -> tuple[bool, datetime | None]:
    """Return whether a store with these hours is open at `at` and, if not, when it opens next
    (the answers of `is_open_at` and `next_opening`, from the day's cached schedule)."""
    if hours.week is None:
        return True, None
    at_utc = _utc(at)
    windows = _schedule(hours, tz, at_utc.astimezone(ZoneInfo(tz)).date())
    # The first window that starts after `at`: the store is open if one before it still runs.
    following = bisect.bisect_right(windows, at_utc, key=lambda w: w[0])
    if any(at_utc < end for _, end in windows[:following]):
        return True, None
    return False, windows[following][0] if following < len(windows) else None
