"""Jobs as a courier sees them: store, drop-off, deadline, distance and what is left to do.

Private drop-offs: the exact drop-off point and the address are shown only to the job's own
courier (after the claim), the store's pharmacists and admins. Anyone else, the board above
all, sees the point snapped to a fixed grid (`O2O_DISPATCH_DROPOFF_GRID_M`, ~200 m) and no
address, so browsing the board cannot harvest patients' addresses.
"""

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.couriers import Where
from dispatch.models import Job
from o2o.config import get_settings
from o2o.geo import snap_to_grid, to_latlon
from o2o.users.models import Role, User
from stores import statements
from stores.statements import Step, Steps


def sees_exact_dropoff(viewer: User, store_id: int, courier_id: int | None) -> bool:
    """Tell whether a viewer may see the exact drop-off and address of a job of `store_id` held
    by `courier_id`."""
    if viewer.role is Role.ADMIN:
        return True
    if viewer.role is Role.PHARMACIST:
        return store_id in viewer.store_ids
    # Its courier, from the claim on (also once delivered or failed: they have been there).
    return courier_id is not None and courier_id == viewer.id


def approximate_dropoff(element) -> dict[str, float]:
    """Return a drop-off as the board shows it: the centre of its grid cell."""
    return _on_grid(to_latlon(element))


def _on_grid(point: dict[str, float]) -> dict[str, float]:
    return snap_to_grid(point["lat"], point["lon"], get_settings().dispatch_dropoff_grid_m)


# One statement for a page of views: plain columns (points as their coordinates), no ORM
# entities to build, so a claim's answer costs its one round trip. The rows are read as they are
# now: a claim marks its job in SQL within the same transaction.
_VIEWS_SQL = text(
    """
    SELECT j.id, j.order_id, j.store_id, j.courier_id, j.deadline, j.priority,
           CAST(j.status AS text) AS status, j.attempt, j.claimed_at, j.pickup_due_at,
           j.picked_up_at, j.code_failures, j.batch_id, j.drop_seq, j.drop_eta, j.run_id,
           ST_Y(CAST(j.dropoff AS geometry)) AS dropoff_lat,
           ST_X(CAST(j.dropoff AS geometry)) AS dropoff_lon,
           s.name AS store_name,
           ST_Y(CAST(s.location AS geometry)) AS store_lat,
           ST_X(CAST(s.location AS geometry)) AS store_lon,
           -- A run's drop-off is its pickup point: its address is the point's.
           coalesce(o.delivery_address_text, pp.name || ', ' || pp.address) AS address_text,
           -- A job opens before its order is ready: the parcel may still be prepared.
           o.status IS DISTINCT FROM 'preparing' AS parcel_ready,
           ST_Distance(s.location, ST_GeogFromText(:point)) AS measured_m  -- null without one
    FROM dispatch_jobs j
    JOIN stores s ON s.id = j.store_id
    LEFT JOIN orders o ON o.id = j.order_id
    LEFT JOIN pickup_runs r ON r.id = j.run_id
    LEFT JOIN pickup_points pp ON pp.id = r.point_id
    WHERE j.id = ANY(CAST(:ids AS uuid[]))
    """
)


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
    session.flush()  # a text statement does not flush the session's pending changes itself
    return statements.run(session, describe_plan(job_ids, distances, viewer=viewer, where=where))


def describe_plan(
    job_ids: list[uuid.UUID],
    distances: dict[uuid.UUID, float | None] | None = None,
    *,
    viewer: User,
    where: Where | None = None,
) -> Steps[list[dict[str, Any]]]:
    """`describe_jobs` as a plan of one statement (`stores.statements`), for a session or the
    driver's connection."""
    rows = yield Step(
        _VIEWS_SQL, {"ids": job_ids, "point": where.wkt if where is not None else None}
    )
    by_id = {row.id: row for row in rows}
    distances = distances or {}
    max_failures = get_settings().dispatch_code_max_failures
    views = []
    for job_id in job_ids:
        row = by_id[job_id]
        exact = sees_exact_dropoff(viewer, row.store_id, row.courier_id)
        dropoff = {"lat": row.dropoff_lat, "lon": row.dropoff_lon}
        views.append(
            {
                "id": row.id,
                "order_id": row.order_id,
                "store": {
                    "id": row.store_id,
                    "name": row.store_name,
                    "location": {"lat": row.store_lat, "lon": row.store_lon},
                },
                "dropoff": dropoff if exact else _on_grid(dropoff),
                "dropoff_exact": exact,
                "deadline": row.deadline,
                "priority": row.priority,
                "distance_m": row.measured_m if where is not None else distances.get(job_id),
                "status": row.status,
                "parcel_ready": row.parcel_ready,
                "attempt": row.attempt,
                "claimed_at": row.claimed_at,
                "pickup_due_at": row.pickup_due_at if row.status == "claimed" else None,
                "picked_up_at": row.picked_up_at,
                "address_text": row.address_text if exact else None,
                "code_attempts_left": max(0, max_failures - row.code_failures),
                "batch_id": row.batch_id,
                "drop_seq": row.drop_seq,
                "drop_eta": row.drop_eta,
                "run_id": row.run_id,
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
