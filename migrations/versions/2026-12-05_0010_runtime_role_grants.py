"""least privilege: the runtime role gets DML only, the audit trail INSERT and SELECT only

The migrations run as the owner role, which owns every table. The API, the worker and beat connect
as the runtime role (O2O_DB_RUNTIME_ROLE, default o2o_app), created beforehand by the bootstrap
superuser (scripts/platform.sh, or the compose database's init script). It gets SELECT, INSERT,
UPDATE and DELETE on the tables that exist and, through default privileges, on every table a later
migration creates; never TRUNCATE, never DDL (only the owner may ALTER a table or disable a
trigger). The append-only audit trail keeps INSERT and SELECT only, so the trigger is a second
fence, not the only one; the payment events ledger may not lose a row and only its outcome column
is written after the insert; alembic_version is read-only. A later append-only table must revoke
UPDATE and DELETE in its own migration (docs/SECURITY.md).

When the runtime role does not exist (a database migrated by a superuser for local tools), the
grants are skipped: nothing can connect as that role anyway.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 02:00:00.000000
"""

import os
import re
from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("prescription_audit",)
# Ledgers: rows are never deleted, and only the named columns change after the insert.
LEDGER_COLUMNS = {"payment_events": ("outcome",)}
READ_ONLY = ("alembic_version",)


def _role() -> str:
    role = os.environ.get("O2O_DB_RUNTIME_ROLE", "o2o_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"O2O_DB_RUNTIME_ROLE is not a plain role name: {role!r}")
    return role


def _when_role_exists(role: str, statements: list[str]) -> None:
    body = "\n".join(f"    EXECUTE {_literal(s)};" for s in statements)
    op.execute(
        f"DO $$ BEGIN\n  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN\n"
        f"{body}\n  END IF;\nEND $$"
    )


def _literal(statement: str) -> str:
    return "'" + statement.replace("'", "''") + "'"


def upgrade() -> None:
    role = _role()
    statements = [
        f"GRANT CONNECT ON DATABASE {_database()} TO {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        _on_owned_tables(f"GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO {role}"),
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]
    for table in APPEND_ONLY:
        statements.append(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}")
    for table, columns in LEDGER_COLUMNS.items():
        statements.append(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}")
        statements.append(f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO {role}")
    for table in READ_ONLY:
        statements.append(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {role}")
    _when_role_exists(role, statements)


def downgrade() -> None:
    role = _role()
    _when_role_exists(
        role,
        [
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            f"REVOKE USAGE, SELECT ON SEQUENCES FROM {role}",
            _on_owned_tables(f"REVOKE ALL ON %s FROM {role}"),
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        ],
    )


def _database() -> str:
    return '"' + op.get_bind().exec_driver_sql("SELECT current_database()").scalar() + '"'


def _on_owned_tables(template: str) -> str:
    # Only the tables the migrating role owns: PostGIS's spatial_ref_sys belongs to the superuser
    # (and everyone may read it already).
    return (
        "DO $g$ DECLARE t text; BEGIN FOR t IN SELECT quote_ident(tablename) FROM pg_tables "
        "WHERE schemaname = 'public' AND tableowner = current_user LOOP "
        f"EXECUTE format('{template}', t); END LOOP; END $g$"
    )
