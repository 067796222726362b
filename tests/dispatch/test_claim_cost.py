"""What a claim reads: the orders of the few jobs it looks at, however many are open."""

from sqlalchemy import text

from dispatch import pool
from o2o import clock
from stores.statements import Step
from tests import factories
from tests.dispatch import helpers

HERE = factories.offset(300, 0)


def _rows_read(plan: dict, table: str) -> int:
    """Rows a plan's scans of `table` returned, over all their loops."""
    total, nodes = 0, [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == table:
            total += node["Actual Rows"] * node["Actual Loops"]
        nodes.extend(node.get("Plans", []))
    return total


def _claim_explained(db, courier) -> dict:
    """Run a claim's plan in the test's transaction; return its claim statement's plan, as run.

    Random reads are priced a hundred times their default for the claim: a plan free to choose
    would then read the orders in one pass rather than one by key for each job read."""
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

    # Each store's first jobs in rank order are read, and each job's order by its key: a few
    # a store. Reading every ready order of the district would read 200.
    assert _rows_read(plan, "orders") <= len(stores) * pool.CLAIM_CANDIDATES_PER_STORE
    assert db.scalar(text("SELECT count(*) FROM dispatch_jobs WHERE status = 'claimed'")) == 1
