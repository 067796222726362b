"""Jobs as a courier sees them: store, drop-off, deadline, distance and what is left to do.

Private drop-offs: the exact drop-off point and the address are shown only to the job's own
courier (after the claim), the store's pharmacists and admins. Anyone else, the board above
all, sees the point snapped to a fixed grid (`O2O_DISPATCH_DROPOFF_GRID_M`, ~200 m) and no
address, so browsing the board cannot harvest patients' addresses.
"""

import uuid
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from dispatch.couriers import Where
from dispatch.models import Job
from dispatch.run_models import PickupRun
from o2o.config import get_settings
from o2o.geo import snap_to_grid, to_latlon
from o2o.orders.models import Order
from o2o.users.models import Role, User
from stores.models import Store
from stores.pickup_points import PickupPoint


def sees_exact_dropoff(viewer: User, job: Job) -> bool:
    """Tell whether a viewer may see a job's exact drop-off and address."""
    if viewer.role is Role.ADMIN:
        return True
    if viewer.role is Role.PHARMACIST:
        return job.store_id in viewer.store_ids
    # Its courier, from the claim on (also once delivered or failed: they have been there).
    return job.courier_id is not None and job.courier_id == viewer.id


def approximate_dropoff(element) -> dict[str, float]:
    """Return a drop-off as the board shows it: the centre of its grid cell."""
    point = to_latlon(element)
    return snap_to_grid(point["lat"], point["lon"], get_settings().dispatch_dropoff_grid_m)


def describe_jobs(
    session: Session,
    job_ids: list[uuid.UUID],
    distances: dict[uuid.UUID, float | None] | None = None,
    *,
    viewer: User,
    where: Where | None = None,
) -> list[dict[str, Any]]:
    """Build the viewer's view of jobs (in the order given), in one statement; each store's
    distance is taken from `distances`, or measured from `where` when given."""
    if not job_ids:
        return []
    from_where = (
        func.ST_Distance(Store.location, func.ST_GeogFromText(where.wkt))
        if where is not None
        else literal(None)
    )
    rows = session.execute(
        select(
            Job,
            Store.name,
            Store.location,
            # A run's drop-off is its pickup point: its address is the point's.
            func.coalesce(
                Order.delivery_address_text, PickupPoint.name + ", " + PickupPoint.address
            ),
            from_where,
        )
        .join(Store, Store.id == Job.store_id)
        .outerjoin(Order, Order.id == Job.order_id)
        .outerjoin(PickupRun, PickupRun.id == Job.run_id)
        .outerjoin(PickupPoint, PickupPoint.id == PickupRun.point_id)
        .where(Job.id.in_(job_ids))
        # A claim marks its job in SQL: read the row as it is now, not as the session held it.
        .execution_options(populate_existing=True)
    ).all()
    by_id = {row[0].id: row for row in rows}
    distances = distances or {}
    max_failures = get_settings().dispatch_code_max_failures
    views = []
    for job_id in job_ids:
        job, store_name, store_location, address_text, measured = by_id[job_id]
        exact = sees_exact_dropoff(viewer, job)
        views.append(
            {
                "id": job.id,
                "order_id": job.order_id,
                "store": {
                    "id": job.store_id,
                    "name": store_name,
                    "location": to_latlon(store_location),
                },
                "dropoff": to_latlon(job.dropoff) if exact else approximate_dropoff(job.dropoff),
                "dropoff_exact": exact,
                "deadline": job.deadline,
                "priority": job.priority,
                "distance_m": measured if where is not None else distances.get(job_id),
                "status": job.status.value,
                "attempt": job.attempt,
                "claimed_at": job.claimed_at,
                "picked_up_at": job.picked_up_at,
                "address_text": address_text if exact else None,
                "code_attempts_left": max(0, max_failures - job.code_failures),
                "batch_id": job.batch_id,
                "drop_seq": job.drop_seq,
                "drop_eta": job.drop_eta,
                "run_id": job.run_id,
            }
        )
    return views


def describe_job(
    session: Session, job: Job | uuid.UUID, where: Where | None = None, *, viewer: User
) -> dict[str, Any]:
    """Build the viewer's view of one job (or job id), with the store's distance from `where`
    if given."""
    job_id = job if isinstance(job, uuid.UUID) else job.id
    return describe_jobs(session, [job_id], viewer=viewer, where=where)[0]
