"""The one Celery app: Redis broker and result backend, the one beat schedule.

Tasks are written to be idempotent, so they are acknowledged late and re-queued when a worker
dies mid-task: a task may run twice, never zero times.
"""

from celery import Celery

from o2o.config import get_settings

settings = get_settings()

# The task modules are listed by the worker's entry point (`o2o.worker`), which stands above the
# domains; core names none of them.
app = Celery("o2o", broker=settings.redis_url, backend=settings.redis_url)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_expires=3600,
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=300,
    task_soft_time_limit=240,
    broker_connection_retry_on_startup=True,
    # Unacknowledged tasks of a worker that vanished are redelivered after this many seconds.
    broker_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
    result_backend_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
    worker_hijack_root_logger=False,
)

app.conf.beat_schedule = {
    "heartbeat": {"task": "o2o.tasks.heartbeat", "schedule": 60.0},
    "orders-expire-holds": {"task": "o2o.orders.tasks.expire_holds", "schedule": 60.0},
    "orders-purge-idempotency-records": {
        "task": "o2o.orders.tasks.purge_idempotency_records",
        "schedule": 3600.0,
    },
    "prescriptions-escalate-unclaimed": {
        "task": "prescriptions.escalate_unclaimed",
        "schedule": 60.0,
    },
    "prescriptions-flag-unreviewed": {"task": "prescriptions.flag_unreviewed", "schedule": 60.0},
    "prescriptions-expire-issued": {"task": "prescriptions.expire_issued", "schedule": 60.0},
    "prescriptions-return-stale-claims": {
        "task": "prescriptions.return_stale_claims",
        "schedule": 60.0,
    },
    "prescriptions-purge-attachments": {
        "task": "prescriptions.purge_attachments",
        "schedule": 3600.0,
    },
    "dispatch-sla-monitor": {"task": "dispatch.sla_monitor", "schedule": 60.0},
    "dispatch-return-stale-claims": {"task": "dispatch.return_stale_claims", "schedule": 60.0},
    "dispatch-fleet-load": {"task": "dispatch.fleet_load", "schedule": 60.0},
    "dispatch-relay-outbox": {"task": "dispatch.relay_outbox", "schedule": 5.0},
    "dispatch-return-uncollected-parcels": {
        "task": "dispatch.return_uncollected_parcels",
        "schedule": 60.0,
    },
    "members-expire-points": {"task": "members.expire_points", "schedule": 3600.0},
}
