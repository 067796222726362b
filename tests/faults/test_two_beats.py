"""Two beat schedulers started by mistake: both send the periodic task, the work happens once
per period (the once_per_period lock in o2o/tasks.py)."""

import math
import sys
import time

import pytest
import redis

from tests.faults.conftest import celery_worker, kill, service_env, spawn
from tests.faults.fault_tasks import TICK_PERIOD_S
from tests.polling import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.worker]

RUN_S = 6 * TICK_PERIOD_S


def _beat(env, schedule_file, name):
    return spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.faults.fault_app",
            "beat",
            "--loglevel=INFO",
            "--max-interval=1",
            "-s",
            str(schedule_file),
        ],
        env,
        name + ".log",
    )


def test_two_beats_send_twice_but_the_work_runs_once_per_period(spare_pg, spare_redis, tmp_path):
    r = redis.Redis.from_url(spare_redis.url, decode_responses=True)
    env = service_env(spare_pg.url, spare_redis.url, O2O_FAULTS_FAST_BEAT="1")
    worker = celery_worker(env, "faults-beat-worker", "--pool=solo")
    beats = []
    try:
        beats = [_beat(env, tmp_path / f"beat-{n}", f"faults-beat-{n}") for n in (1, 2)]
        wait_for(lambda: r.llen("faults:tick:runs") >= 1, 60, "the first periodic run")
        started = time.time()
        time.sleep(RUN_S)
        for proc in beats:
            kill(proc)
        # Let the worker drain what the beats already sent.
        time.sleep(1.5)
        ended = time.time()
    finally:
        for proc in beats:
            kill(proc)
        kill(worker)

    runs = [float(t) for t in r.lrange("faults:tick:runs", 0, -1)]
    sent = int(r.get("faults:tick:sent"))
    slots = [math.floor(t / TICK_PERIOD_S) for t in runs]
    # Both beats really sent: each sends every second, four sends a period between them (one beat
    # alone would send about two).
    assert sent >= 3 * len(runs), (sent, len(runs))
    # The lock admitted one run per period, never two.
    assert len(slots) == len(set(slots)), f"two runs in one period: {runs}"
    # And the work kept happening: a run in every period of the window but at most one. A run is
    # placed by when the worker ran it, so a worker held up past the end of a period (a busy
    # shared machine) runs that period's sends in the next one, where the lock keeps one; a lock
    # that held past its period, or let nothing run, would leave several periods without a run.
    window = range(math.floor(started / TICK_PERIOD_S) + 1, math.floor(ended / TICK_PERIOD_S))
    missing = [slot for slot in window if slot not in slots]
    assert len(window) >= 5 and len(missing) <= 1, f"periods without a run: {missing} of {window}"
