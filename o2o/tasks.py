"""Platform housekeeping tasks, and the lock that makes periodic work happen once per period."""

import socket
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from o2o.celery_app import app
from o2o.redis import get_redis

HEARTBEAT_KEY = "o2o:worker:heartbeat"


def once_per_period(name: str, period_s: int) -> Callable:
    """Run the wrapped periodic task at most once per period, however many beats send it.

    Two beat schedulers (a mistake that happens in every deployment sooner or later) each send the
    task; the first to take the period's Redis key runs, the others return None.
    """

    def decorator(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            slot = int(time.time() // period_s)
            key = f"o2o:periodic:{name}:{slot}"
            if not get_redis().set(key, socket.gethostname(), nx=True, ex=period_s * 2):
                return None
            return fn(*args, **kwargs)

        return wrapper

    return decorator


@app.task(name="o2o.tasks.heartbeat")
def heartbeat() -> dict:
    """Record that a worker is alive and the beat is sending (readable by operators)."""
    now = time.time()
    get_redis().set(HEARTBEAT_KEY, f"{now:.0f}", ex=600)
    return {"worker": socket.gethostname(), "at": now}
