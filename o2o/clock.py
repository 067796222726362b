"""The platform's clock: real UTC time, unless a caller installs another one.

Services read the time through `now()` (their `now_utc()` helpers delegate here), so the
simulation can run a whole day of real service calls on an accelerated clock with `use(clock)`.
A context variable keeps an installed clock local to the thread (or task) that installed it.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_clock: ContextVar[Callable[[], datetime] | None] = ContextVar("o2o_clock", default=None)


def now() -> datetime:
    """Return the current time in UTC, from the installed clock if there is one."""
    clock = _clock.get()
    return clock() if clock is not None else datetime.now(UTC)


@contextmanager
def use(clock: Callable[[], datetime]) -> Iterator[None]:
    """Read the time from `clock` inside the block (simulations, tests)."""
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)
