"""Test-only tasks that run real platform work at a moment a fault test can aim at."""

import os
import time
from datetime import datetime

from o2o.celery_app import app
from o2o.order_flow.tasks import expire_holds
from o2o.redis import get_redis
from o2o.tasks import once_per_period

TICK_PERIOD_S = 2


@app.task(name="faults.expire_then_stall")
def expire_then_stall(now_iso: str) -> int:
    """Expire due order holds (committed), then, on the first delivery only, stall before the
    acknowledgement so the test can kill the worker between the effect and the ack."""
    r = get_redis()
    attempt = r.incr("faults:expire:attempts")
    cancelled = expire_holds(now=datetime.fromisoformat(now_iso))
    r.rpush("faults:expire:cancelled", cancelled)
    if attempt == 1:
        r.set("faults:expire:stalled_pid", os.getpid())
        time.sleep(120)
    return cancelled


@app.task(name="faults.tick")
def tick() -> None:
    """Count every send of the periodic tick, then do its once-per-period work."""
    get_redis().incr("faults:tick:sent")
    _tick_work()


@once_per_period("faults.tick", TICK_PERIOD_S)
def _tick_work() -> None:
    get_redis().rpush("faults:tick:runs", f"{time.time():.6f}")
