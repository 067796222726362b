"""Least privilege: the suite, like the API, the worker and beat, connects as the runtime role,
which may read and write rows but never rewrite the audit trail, change the schema or bypass a
trigger. Each statement below would succeed as a superuser or as the owner."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import owner_engine

REFUSED = [
    "UPDATE prescription_audit SET reason = 'rewritten'",
    "DELETE FROM prescription_audit",
    "TRUNCATE prescription_audit",
    "ALTER TABLE prescription_audit DISABLE TRIGGER prescription_audit_append_only",
    "DROP TRIGGER prescription_audit_append_only ON prescription_audit",
    "ALTER TABLE prescription_audit ADD COLUMN note text",
    "DROP TABLE prescription_audit",
    "SET session_replication_role = replica",
    "TRUNCATE orders CASCADE",
    "CREATE TABLE stolen (x int)",
    "UPDATE payment_events SET type = 'captured'",
    # The members' point ledger is append-only: a balance is the sum of its rows.
    "UPDATE member_point_entries SET points = points + 1000",
    "DELETE FROM member_point_entries",
    "TRUNCATE member_point_entries",
    "DELETE FROM payment_events",
    "TRUNCATE payment_events",
    "UPDATE leader_commissions SET commission_minor = 0",
    "DELETE FROM leader_commissions",
    "UPDATE alembic_version SET version_num = '0001'",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    "COPY (SELECT 1) TO PROGRAM 'true'",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_runtime_role_is_refused(engine, statement):
    with engine.connect() as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(text(statement))
        conn.rollback()
    # Refused for want of privilege, not by the trigger or a typo.
    assert refused.value.orig.sqlstate in {"42501"}, refused.value


def test_runtime_role_is_no_superuser_and_may_append_to_the_audit_trail(engine):
    with engine.connect() as conn:
        role = conn.execute(
            text(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
                "FROM pg_roles WHERE rolname = current_user"
            )
        ).one()
        assert role.rolname != owner_engine().url.username
        assert not (role.rolsuper or role.rolcreaterole or role.rolcreatedb or role.rolbypassrls)
        may = conn.execute(
            text(
                "SELECT has_table_privilege('prescription_audit', 'INSERT'),"
                " has_table_privilege('prescription_audit', 'SELECT'),"
                " has_table_privilege('orders', 'UPDATE'),"
                " has_table_privilege('orders', 'DELETE')"
            )
        ).one()
    assert all(may)


def test_owner_is_no_superuser_either(engine):
    with owner_engine().connect() as conn:
        assert (
            conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")) is False
        )
        assert (
            conn.scalar(text("SELECT count(*) FROM pg_tables WHERE tableowner = current_user")) > 0
        )


def test_the_trigger_still_refuses_the_owner(engine):
    """The second fence: even the owner cannot rewrite the trail without first dropping the
    trigger, which is a schema change a migration would show."""
    with owner_engine().connect() as conn:
        for statement in REFUSED[:2]:
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(statement))
            conn.rollback()
