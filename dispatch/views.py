"""Jobs as a courier sees them: store, drop-off, deadline, distance and what is left to do."""

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatch.couriers import Where
from dispatch.models import Job
from o2o.config import get_settings
from o2o.geo import to_latlon
from o2o.orders.models import Order
from stores.models import Store


def describe_jobs(
    session: Session,
    job_ids: list[uuid.UUID],
    distances: dict[uuid.UUID, float | None] | None = None,
) -> list[dict[str, Any]]:
    """Build the courier's view of jobs (in the order given)."""
    if not job_ids:
        return []
    rows = session.execute(
        select(Job, Store.name, Store.location, Order.delivery_address_text)
        .join(Store, Store.id == Job.store_id)
        .join(Order, Order.id == Job.order_id)
        .where(Job.id.in_(job_ids))
    ).all()
    by_id = {row[0].id: row for row in rows}
    distances = distances or {}
    max_failures = get_settings().dispatch_code_max_failures
    views = []
    for job_id in job_ids:
        job, store_name, store_location, address_text = by_id[job_id]
        views.append(
            {
                "id": job.id,
                "order_id": job.order_id,
                "store": {
                    "id": job.store_id,
                    "name": store_name,
                    "location": to_latlon(store_location),
                },
                "dropoff": to_latlon(job.dropoff),
                "deadline": job.deadline,
                "priority": job.priority,
                "distance_m": distances.get(job_id),
                "status": job.status.value,
                "attempt": job.attempt,
                "claimed_at": job.claimed_at,
                "picked_up_at": job.picked_up_at,
                "address_text": address_text,
                "code_attempts_left": max(0, max_failures - job.code_failures),
                "batch_id": job.batch_id,
                "drop_seq": job.drop_seq,
                "drop_eta": job.drop_eta,
            }
        )
    return views


def describe_job(session: Session, job: Job, where: Where | None = None) -> dict[str, Any]:
    """Build the courier's view of one job, with the store's distance from `where` if given."""
    distance = None
    if where is not None:
        distance = session.scalar(
            select(func.ST_Distance(Store.location, func.ST_GeogFromText(where.wkt))).where(
                Store.id == job.store_id
            )
        )
    return describe_jobs(session, [job.id], {job.id: distance})[0]
