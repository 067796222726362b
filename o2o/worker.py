"""The Celery worker's and beat's entry point: `celery -A o2o.worker worker` (or `beat`).

It loads the one Celery app with every domain's tasks and wires the event subscribers, so a
task that cancels or completes an order reaches prescriptions and dispatch as a request does.
"""

from o2o import wiring
from o2o.celery_app import app

# Task modules, bottom floor first.
app.conf.include = [
    "o2o.tasks",
    "o2o.webhooks.tasks",
    "prescriptions.tasks",
    "dispatch.tasks",
    "dispatch.run_tasks",
    "o2o.members.tasks",
    "o2o.order_flow.tasks",
]
wiring.connect()

__all__ = ["app"]
