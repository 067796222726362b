"""A statement written for SQLAlchemy, as the driver's connection runs it (`%(name)s`)."""

from sqlalchemy import text

from dispatch import pool
from stores.proximity import driver_sql


def test_binds_become_the_drivers_and_nothing_else_changes():
    statement = text(
        "SELECT CAST(:now AS timestamptz), TIMESTAMPTZ '2000-01-01 00:00:00+00', s.id::text, "
        "'10%' AS share FROM stores s WHERE s.id = :store_id"
    )
    assert driver_sql(statement) == (
        "SELECT CAST(%(now)s AS timestamptz), TIMESTAMPTZ '2000-01-01 00:00:00+00', s.id::text, "
        "'10%%' AS share FROM stores s WHERE s.id = %(store_id)s"
    )


def test_the_claims_statement_keeps_its_deadline_buckets_origin():
    # The claim ranks by deadline buckets from a fixed origin written as a literal time: its
    # colons are not binds.
    sql = driver_sql(pool._claim_sql(pool.Ranking.URGENCY, ""))
    assert "'2000-01-01 00:00:00+00'" in sql
    assert "%(00)s" not in sql
    assert "%(courier_id)s" in sql and "%(bucket)s" in sql
