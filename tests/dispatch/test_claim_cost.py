"""What a claim reads: the orders of the few jobs it looks at, however many are open."""

from sqlalchemy import text

from dispatch import pool
from dispatch.models import JobStatus
from o2o import clock
from stores.statements import Step
from tests import factories
from tests.dispatch import helpers

HERE = factories.offset(300, 0)


def _scans_of(plan: dict, table: str) -> list[dict]:
    """Every node of a plan that reads `table`, with what it returned."""
    found, nodes = [], [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == table:
            found.append(node)
        nodes.extend(node.get("Plans", []))
    return found


def _claim_explained(db, courier) -> dict:
    """Run a claim's plan in the test's transaction; return its claim statement's plan, as run.

    Random reads are priced at 100 (25 times PostgreSQL's default) for the claim, as a city's
    statistics can make them look: a plan free to choose then reads every takeable order in one
    pass rather than each job's order by its key."""
    steps = pool.claim_plan(courier.id, lat=HERE[0], lon=HERE[1], now=clock.now())
    step: Step = next(steps)
    while "FOR UPDATE OF j SKIP LOCKED" not in str(step.statement):
        step = steps.send(db.execute(step.statement, step.params).all())
    db.execute(text("SET LOCAL random_page_cost = 100"))
    (explained,) = db.execute(
        text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(step.statement)), step.params
    ).one()
    return explained[0]["Plan"]


def test_a_claim_reads_the_orders_of_the_jobs_it_looks_at_not_every_ready_order(db):
    # A district of ten stores, each with twenty ready deliveries.
    stores = [
        factories.make_store(
            db,
            at=factories.offset(300 * k, 200 * (k % 3)),
            zone_half_side_m=helpers.DELIVERY_ZONE_M,
        )
        for k in range(10)
    ]
    for store in stores:
        for _ in range(20):
            helpers.make_delivery_order(db, store)
    courier = helpers.make_courier(
        db, area=factories.square_zone(factories.SHANGHAI, 6000), at=HERE
    )

    plan = _claim_explained(db, courier)

    # Each job read has its order read by its key, one row at a time. In one pass over the
    # takeable orders, a scan would return all 200 of the district's.
    scans = _scans_of(plan, "orders")
    assert scans
    assert all(scan["Actual Rows"] <= 1 for scan in scans), [
        (scan["Node Type"], scan["Actual Rows"], scan["Actual Loops"]) for scan in scans
    ]
    assert db.scalar(text("SELECT count(*) FROM dispatch_jobs WHERE status = 'claimed'")) == 1


def test_a_claim_does_not_read_the_jobs_of_a_store_beyond_the_radius_it_cannot_see(db):
    # Beyond the radius a courier sees only escalated jobs: the far store's thirty are not.
    near = factories.make_store(db, zone_half_side_m=helpers.DELIVERY_ZONE_M)
    far = factories.make_store(
        db, at=factories.offset(8300, 0), zone_half_side_m=helpers.DELIVERY_ZONE_M
    )
    for _ in range(30):
        helpers.make_delivery_order(db, far)
    mine = helpers.make_delivery_order(db, near)
    courier = helpers.make_courier(
        db, area=factories.square_zone(factories.SHANGHAI, 10000), at=HERE
    )

    plan = _claim_explained(db, courier)

    # The near store's job is claimed; the far store's jobs are not read one by one to find
    # that none is visible (before, all thirty were read and dropped).
    assert helpers.job_of(db, mine).status is JobStatus.CLAIMED
    read = sum(
        (scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)) * scan["Actual Loops"]
        for scan in _scans_of(plan, "dispatch_jobs")
        if scan["Node Type"] == "Index Scan" and "store_id" in scan.get("Index Cond", "")
    )
    assert read <= 2
