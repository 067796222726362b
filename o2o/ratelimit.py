"""Redis-backed rate limits (the `limits` library, moving windows) that answer 429 + Retry-After.

If Redis is unreachable the limits fail open: the platform keeps serving and logs it, since
refusing every login or order while Redis restarts would be a worse outage than a short window
without throttling. After a failure they do not ask Redis again for PAUSE_AFTER_FAILURE_S: an
unreachable Redis would otherwise cost every request its timeout, and an async endpoint's check
runs in the event loop, where it holds up every request of the worker.
"""

import functools
import logging
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from o2o.config import get_settings
from o2o.errors import RateLimited

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_S = 2.0
_monotonic = time.monotonic
_paused_until = 0.0


def _ask(what: str, call: Callable[[], object]) -> None:
    """Run one exchange with Redis, unless it failed a moment ago; on failure, fail open (`what`
    says how) and leave Redis alone for PAUSE_AFTER_FAILURE_S. A 429 goes through."""
    global _paused_until
    if _monotonic() < _paused_until:
        return
    try:
        call()
    except RateLimited:
        raise
    except Exception:
        _paused_until = _monotonic() + PAUSE_AFTER_FAILURE_S
        log.warning("rate limit storage unavailable; %s", what)


@functools.cache
def _limiter() -> MovingWindowRateLimiter:
    url = get_settings().redis_url
    storage = storage_from_string(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return MovingWindowRateLimiter(storage)


@functools.cache
def limit(spec: str) -> RateLimitItem:
    """Parse a limit such as "5/5 minutes" once."""
    return parse(spec)


def _retry_after(item: RateLimitItem, *keys: str) -> int:
    stats = _limiter().get_window_stats(item, *keys)
    return max(1, math.ceil(stats.reset_time - time.time()))


def check(item: RateLimitItem, *keys: str, message: str) -> None:
    """Raise RateLimited if the window for keys is already full (does not count a hit)."""

    def test() -> None:
        if not _limiter().test(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))

    _ask("allowing request", test)


def hit(item: RateLimitItem, *keys: str, message: str) -> None:
    """Count one hit; raise RateLimited when it does not fit in the window."""

    def count() -> None:
        if not _limiter().hit(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))

    _ask("allowing request", count)


def give_back(item: RateLimitItem, *keys: str) -> None:
    """Take one hit back from a window (its newest entry): for a request counted by `hit`
    before it knew whether it would count, which then did nothing worth counting."""

    def newest_out() -> None:
        storage = _limiter().storage
        storage.get_connection().lpop(storage.prefixed_key(item.key_for(*keys)))

    _ask("not given back", newest_out)


def record(item: RateLimitItem, *keys: str) -> None:
    """Count one hit without refusing (e.g. a failed login, checked on the next try)."""
    _ask("not counted", lambda: _limiter().hit(item, *keys))


def clear(item: RateLimitItem, *keys: str) -> None:
    _ask("not cleared", lambda: _limiter().clear(item, *keys))
