"""Redis-backed rate limits (the `limits` library, moving windows) that answer 429 + Retry-After.

If Redis is unreachable the limits fail open: the platform keeps serving and logs it, since
refusing every login or order while Redis restarts would be a worse outage than a short window
without throttling.
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
    try:
        if not _limiter().test(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))
    except RateLimited:
        raise
    except Exception:
        log.warning("rate limit storage unavailable; allowing request")


def hit(item: RateLimitItem, *keys: str, message: str) -> None:
    """Count one hit; raise RateLimited when it does not fit in the window."""
    try:
        if not _limiter().hit(item, *keys):
            raise RateLimited(message, retry_after_s=_retry_after(item, *keys))
    except RateLimited:
        raise
    except Exception:
        log.warning("rate limit storage unavailable; allowing request")


def give_back(item: RateLimitItem, *keys: str) -> None:
    """Take one hit back from a window (its newest entry): for a request counted by `hit`
    before it knew whether it would count, which then did nothing worth counting."""
    try:
        storage = _limiter().storage
        storage.get_connection().lpop(storage.prefixed_key(item.key_for(*keys)))
    except Exception:
        log.warning("rate limit storage unavailable; not given back")


def record(item: RateLimitItem, *keys: str) -> None:
    """Count one hit without refusing (e.g. a failed login, checked on the next try)."""
    try:
        _limiter().hit(item, *keys)
    except Exception:
        log.warning("rate limit storage unavailable; not counted")


def clear(item: RateLimitItem, *keys: str) -> None:
    try:
        _limiter().clear(item, *keys)
    except Exception:
        log.warning("rate limit storage unavailable; not cleared")
