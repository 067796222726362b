"""The rate limits fail open when Redis does not answer, and then leave it alone for a moment: a
hung Redis costs one request its timeout, not every request (an async endpoint's check runs in
the event loop, where a timeout holds up every request of the worker)."""

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from o2o import ratelimit
from o2o.config import get_settings
from o2o.errors import RateLimited


@pytest.fixture
def hung_redis(monkeypatch):
    """A server that takes connections and never answers; yields the connections it took."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    taken: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            taken.append(conn)

    threading.Thread(target=take, daemon=True).start()
    monkeypatch.setattr(
        get_settings(), "redis_url", f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    )
    ratelimit._limiter.cache_clear()
    monkeypatch.setattr(ratelimit, "_paused_until", 0.0)
    yield taken
    server.close()
    for conn in taken:
        conn.close()
    ratelimit._limiter.cache_clear()
    ratelimit._async_limiters.clear()


def _connections(taken: list, n: int) -> bool:
    """Whether the server has taken n connections (it takes them in its own thread)."""
    for _ in range(200):
        if len(taken) >= n:
            return len(taken) == n
        time.sleep(0.01)
    return False


def test_a_hung_redis_is_asked_once_then_left_alone_for_a_moment(hung_redis, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "_monotonic", lambda: now[0])
    item = ratelimit.limit("1/minute")

    # The first request waits out the timeout and is let through.
    ratelimit.hit(item, "pause-test", message="too many")
    assert _connections(hung_redis, 1)
    # The next ones, well over the limit, are let through without asking Redis again.
    for _ in range(5):
        ratelimit.hit(item, "pause-test", message="too many")
        ratelimit.check(item, "pause-test", message="too many")
    assert _connections(hung_redis, 1)

    # After the pause Redis is asked again (and, still hung, paused again).
    now[0] += ratelimit.PAUSE_AFTER_FAILURE_S
    ratelimit.hit(item, "pause-test", message="too many")
    assert _connections(hung_redis, 2)
    ratelimit.hit(item, "pause-test", message="too many")
    assert _connections(hung_redis, 2)


def test_an_awaited_check_fails_open_and_pauses_as_well(hung_redis, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "_monotonic", lambda: now[0])
    item = ratelimit.limit("1/minute")

    async def hits(n: int) -> None:
        for _ in range(n):
            await ratelimit.hit_async(item, "pause-test", message="too many")

    asyncio.run(hits(1))
    assert _connections(hung_redis, 1)
    asyncio.run(hits(5))
    assert _connections(hung_redis, 1)
    now[0] += ratelimit.PAUSE_AFTER_FAILURE_S
    asyncio.run(hits(1))
    assert _connections(hung_redis, 2)


def _served_while(exchange: Callable[[], Awaitable[object]]) -> int:
    """How many times the loop served another request (a 10 ms task) while `exchange` waited."""

    async def served_meanwhile() -> int:
        served = 0

        async def other_requests() -> None:
            nonlocal served
            while True:
                await asyncio.sleep(0.01)
                served += 1

        others = asyncio.create_task(other_requests())
        await exchange()
        others.cancel()
        return served

    return asyncio.run(served_meanwhile())


def test_an_awaited_check_leaves_the_loop_to_other_requests_while_redis_is_slow(hung_redis):
    """Search and placing an order await their limit: while Redis keeps one of them waiting (here
    its whole timeout), the worker's loop goes on serving the others."""
    item = ratelimit.limit("1/minute")
    assert _served_while(lambda: ratelimit.hit_async(item, "loop-test", message="too many")) >= 20


def test_an_awaited_give_back_leaves_the_loop_to_others_and_fails_open(hung_redis):
    """The next-job claim gives its hit back, awaited, when it takes no job: while Redis keeps
    that waiting (here its whole timeout), the worker's loop serves the other requests, and the
    give-back, failed, pauses the limits as a failed check does."""
    item = ratelimit.limit("1/minute")
    assert _served_while(lambda: ratelimit.give_back_async(item, "give-back-test")) >= 20
    assert _connections(hung_redis, 1)
    assert ratelimit._paused_until > 0.0


def test_an_awaited_give_back_frees_the_window_the_awaited_hit_filled():
    item = ratelimit.limit("2/minute")
    keys = ("give-back-window", uuid.uuid4().hex)

    async def hits_after_a_give_back() -> list[bool]:
        outcomes = []
        for give_back in (False, False, True, False, False):
            if give_back:
                await ratelimit.give_back_async(item, *keys)
                continue
            try:
                await ratelimit.hit_async(item, *keys, message="too many")
                outcomes.append(True)
            except RateLimited:
                outcomes.append(False)
        await ratelimit.close_async()
        return outcomes

    # Two fit the window; one given back makes room for exactly one more.
    assert asyncio.run(hits_after_a_give_back()) == [True, True, True, False]


def test_a_cancelled_check_is_cancelled_and_pauses_nothing(hung_redis):
    """A request cancelled while its check waits on Redis (the client went away) ends there:
    the check neither swallows the cancellation nor counts it as Redis failing."""
    item = ratelimit.limit("1/minute")

    async def cancelled() -> None:
        waiting = asyncio.create_task(ratelimit.hit_async(item, "cancel-test", message="no"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        await waiting

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    assert ratelimit._paused_until == 0.0


def test_the_awaited_and_the_blocking_checks_count_in_one_window():
    """Both name a window with the same key in Redis, so a search counted awaited and a check
    made blocking see the same hits."""
    item = ratelimit.limit("5/minute")
    keys = ("search-ip", "203.0.113.9")

    async def awaited_key() -> str:
        storage = ratelimit._async_limiter().storage
        return storage.bridge.prefixed_key(item.key_for(*keys))

    assert asyncio.run(awaited_key()) == ratelimit._limiter().storage.prefixed_key(
        item.key_for(*keys)
    )
