"""Redis-backed rate limits (the `limits` library, moving windows) that answer 429 + Retry-After.

If Redis is unreachable the limits fail open: the platform keeps serving and logs it, since
refusing every login or order while Redis restarts would be a worse outage than a short window
without throttling. After a failure they do not ask Redis again for PAUSE_AFTER_FAILURE_S: an
unreachable Redis would otherwise cost every request its timeout, and an async endpoint's check
runs in the event loop, where it holds up every request of the worker.

The hottest async endpoints (search, placing an order, the next-job claim, a courier's position
report) count their hit with `hit_async` (and the claim gives it back with `give_back_async` when
it takes nothing): the same window in Redis, asked without blocking the worker's loop, which goes
on with other requests while Redis answers. The checks that were already waiting when Redis stopped
answering each wait out their timeout; those after them are let through for the pause.
"""

import asyncio
import contextlib
import functools
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable

from limits import RateLimitItem, WindowStats, parse
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindowRateLimiter
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from o2o.config import get_settings
from o2o.errors import RateLimited

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_S = 2.0
# How long an exchange with Redis may take before the limits fail open.
_TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
_monotonic = time.monotonic
_paused_until = 0.0


def _ask(what: str, call: Callable[[], object]) -> None:
    """Run one exchange with Redis, unless it failed a moment ago; on failure, fail open (`what`
    says how) and leave Redis alone for PAUSE_AFTER_FAILURE_S. A 429 goes through."""
    if _monotonic() < _paused_until:
        return
    try:
        call()
    except RateLimited:
        raise
    except Exception:
        _failed(what)


async def _ask_async(what: str, call: Callable[[], Awaitable[object]]) -> None:
    """`_ask` for an exchange awaited in the event loop."""
    if _monotonic() < _paused_until:
        return
    try:
        await call()
    except RateLimited:
        raise
    except Exception:
        _failed(what)


def _failed(what: str) -> None:
    global _paused_until
    if _monotonic() >= _paused_until:  # the first failure of a pause says so, not each one
        log.warning("rate limit storage unavailable; %s", what)
    _paused_until = _monotonic() + PAUSE_AFTER_FAILURE_S


@functools.cache
def _limiter() -> MovingWindowRateLimiter:
    url = get_settings().redis_url
    storage = storage_from_string(url, **_TIMEOUTS)
    return MovingWindowRateLimiter(storage)


# An asyncio connection belongs to the loop that opened it: one limiter for each running loop (a
# worker serves in one; the tests start several). An application closes its loop's as it stops
# (`close_async`): its connections hold the loop, so the weak key alone would not let it go.
_async_limiters: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, AsyncMovingWindowRateLimiter
] = weakref.WeakKeyDictionary()


def _async_limiter() -> AsyncMovingWindowRateLimiter:
    loop = asyncio.get_running_loop()
    limiter = _async_limiters.get(loop)
    if limiter is None:
        # The same storage the blocking calls pick for the URL (plain, TLS, Sentinel, cluster),
        # on redis-py's asyncio client.
        storage = storage_from_string(
            "async+" + get_settings().redis_url, implementation="redispy", **_TIMEOUTS
        )
        limiter = _async_limiters[loop] = AsyncMovingWindowRateLimiter(storage)
    return limiter


async def close_async() -> None:
    """Close the running loop's limiter and its connections (an application's lifespan, as it
    stops)."""
    limiter = _async_limiters.pop(asyncio.get_running_loop(), None)
    if limiter is not None:
        with contextlib.suppress(Exception):  # a Redis gone away has nothing left to close
            await limiter.storage.bridge.get_connection().aclose()


@functools.cache
def limit(spec: str) -> RateLimitItem:
    """Parse a limit such as "5/5 minutes" once."""
    return parse(spec)


def _retry_after(item: RateLimitItem, *keys: str) -> int:
    return _seconds_left(_limiter().get_window_stats(item, *keys))


def _seconds_left(stats: WindowStats) -> int:
    """Whole seconds until the window has room again (at least one)."""
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


async def hit_async(item: RateLimitItem, *keys: str, message: str) -> None:
    """`hit` for an async endpoint, awaited: the worker's loop serves other requests while
    Redis answers, instead of waiting on its socket."""

    async def count() -> None:
        limiter = _async_limiter()
        if not await limiter.hit(item, *keys):
            stats = await limiter.get_window_stats(item, *keys)
            raise RateLimited(message, retry_after_s=_seconds_left(stats))

    await _ask_async("allowing request", count)


async def give_back_async(item: RateLimitItem, *keys: str) -> None:
    """Take one hit back from a window (its newest entry), awaited: for a request counted by
    `hit_async` before it knew whether it would count, which then did nothing worth counting."""

    async def newest_out() -> None:
        bridge = _async_limiter().storage.bridge
        await bridge.get_connection().lpop(bridge.prefixed_key(item.key_for(*keys)))

    await _ask_async("not given back", newest_out)


def record(item: RateLimitItem, *keys: str) -> None:
    """Count one hit without refusing (e.g. a failed login, checked on the next try)."""
    _ask("not counted", lambda: _limiter().hit(item, *keys))


def clear(item: RateLimitItem, *keys: str) -> None:
    _ask("not cleared", lambda: _limiter().clear(item, *keys))
