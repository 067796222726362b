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

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from o2o.config import get_settings
from o2o.errors import RateLimited

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_S = 2.0
_monotonic = time.monotonic
_paused_until = 0.0


def _paused() -> bool:
    return _monotonic() < _paused_until


def _failed(what: str) -> None:
    """Fail open, and leave Redis alone for a moment."""
    global _paused_until
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
    if _paused():
        return
    try:
        if not _limiter().test(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))
    except RateLimited:
        raise
    except Exception:
        _failed("allowing request")


def hit(item: RateLimitItem, *keys: str, message: str) -> None:
    """Count one hit; raise RateLimited when it does not fit in the window."""
    if _paused():
        return
    try:
        if not _limiter().hit(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))
    except RateLimited:
        raise
    except Exception:
        _failed("allowing request")


def give_back(item: RateLimitItem, *keys: str) -> None:
    """Take one hit back from a window (its newest entry): for a request counted by `hit`
    before it knew whether it would count, which then did nothing worth counting."""
    if _paused():
        return
    try:
        storage = _limiter().storage
        storage.get_connection().lpop(storage.prefixed_key(item.key_for(*keys)))
    except Exception:
        _failed("not given back")


def record(item: RateLimitItem, *keys: str) -> None:
    """Count one hit without refusing (e.g. a failed login, checked on the next try)."""
    if _paused():
        return
    try:
        _limiter().hit(item, *keys)
    except Exception:
        _failed("not counted")


def clear(item: RateLimitItem, *keys: str) -> None:
    if _paused():
        return
    try:
        _limiter().clear(item, *keys)
    except Exception:
        _failed("not cleared")
