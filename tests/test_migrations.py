"""Migrations: one head, up from empty and down to base, and models that match them."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import o2o.models  # noqa: F401
from o2o.db import Base
from tests.conftest import alembic_config, owner_engine


@pytest.fixture(scope="module")
def scratch_url(engine):
    """An empty database of its own (scripts/test.sh creates it with the extensions, owned by the
    owner role), so going down to base never touches the suite's schema."""
    scratch_db = f"{engine.url.database}_migrations"
    url = owner_engine().url.set(database=scratch_db).render_as_string(hide_password=False)
    command.downgrade(alembic_config(url), "base")
    yield url
    command.downgrade(alembic_config(url), "base")


def test_single_head():
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    assert len(script.get_heads()) == 1


def test_upgrade_from_empty_then_downgrade_to_base_then_up_again(scratch_url):
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "head")
    eng = create_engine(scratch_url)
    tables = set(inspect(eng).get_table_names())
    assert {"users", "stores", "products", "lots"} <= tables
    with eng.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'")) == 1

    command.downgrade(cfg, "base")
    left = set(inspect(eng).get_table_names()) - {"alembic_version", "spatial_ref_sys"}
    assert left == set()

    command.upgrade(cfg, "head")
    assert "lots" in inspect(eng).get_table_names()
    eng.dispose()


def test_models_and_migrations_agree(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": _include_object,
            },
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models differ from migrations: {diff}"


def _include_object(obj, name, type_, reflected, compare_to):
    from geoalchemy2 import alembic_helpers

    if type_ == "table" and name in {"spatial_ref_sys"}:
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)
