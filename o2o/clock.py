"""The platform's clock: real UTC time, unless a caller installs another one.

Every "now" in the code and the tests comes from `now()`, and every "today" is a place's local
day from `today(zone)` (a store counts days in its own time zone, which may already be tomorrow,
or still yesterday, in UTC). So the simulation can run a whole day of real service calls on an
accelerated clock with `use(clock)`, and the suite passes at any hour. This is the only module
that reads the wall clock; a test fails if another one does.
A context variable keeps an installed clock local to the thread (or task) that installed it.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo

_clock: ContextVar[Callable[[], datetime] | None] = ContextVar("o2o_clock", default=None)


def now() -> datetime:
    """Return the current time in UTC, from the installed clock if there is one."""
    clock = _clock.get()
    return clock() if clock is not None else datetime.now(UTC)


def today(zone: str | tzinfo, *, at: datetime | None = None) -> date:
    """Return the local day in `zone` (an IANA name such as "Asia/Shanghai") now, or at `at`."""
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    return (at or now()).astimezone(tz).date()


@contextmanager
def use(clock: Callable[[], datetime]) -> Iterator[None]:
    """Read the time from `clock` inside the block (simulations, tests)."""
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)
