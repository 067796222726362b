"""The Redis client shared by rate limits and readiness checks."""

import functools

import redis

from o2o.config import get_settings


@functools.cache
def get_redis() -> redis.Redis:
    """Return the process-wide Redis client (short timeouts: Redis must never stall a request)."""
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
    )
