"""The platform's Celery app as the fault tests run it: its real configuration, plus a few
test-only tasks and, for the two-beats test, a fast beat schedule (`celery -A` this module)."""

import os

from o2o.worker import app
from tests.faults import fault_tasks  # noqa: F401  (registers the test-only tasks)

if os.environ.get("O2O_FAULTS_FAST_BEAT"):
    # Sent every second by each beat; the task's lock admits one run per TICK_PERIOD_S.
    app.conf.beat_schedule = {"faults-tick": {"task": "faults.tick", "schedule": 1.0}}
