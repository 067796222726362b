import pytest

from o2o.redis import get_redis
from o2o.tasks import HEARTBEAT_KEY, heartbeat, once_per_period

pytestmark = pytest.mark.worker


def test_a_real_worker_runs_a_task_through_redis(celery_worker_process):
    result = heartbeat.delay()
    body = result.get(timeout=30)
    assert body["worker"]
    assert get_redis().get(HEARTBEAT_KEY) is not None


def test_once_per_period_runs_once_however_often_sent():
    calls = []

    @once_per_period("test-once", 3600)
    def job():
        calls.append(1)
        return "ran"

    results = [job() for _ in range(5)]
    assert results.count("ran") == 1
    assert len(calls) == 1
