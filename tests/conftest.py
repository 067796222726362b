"""Test harness: a real PostGIS database migrated once with `alembic upgrade head`, each test
inside a transaction that is rolled back, real Redis, and a real Celery worker when asked for."""

import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from o2o import wiring
from o2o.config import get_settings
from o2o.db import (
    COMMIT_ON_RETURN,
    get_driver,
    get_driver_lender,
    get_runner,
    get_session,
    get_writer_runner,
)
from o2o.redis import get_redis
from tests.async_driver import SyncDriver
from tests.documented_errors import check_422_is_documented

# Property tests are judged on what each example does, never on how long it takes: on a loaded
# machine hypothesis' default 200 ms deadline fails correct code.
hypothesis_settings.register_profile("o2o", deadline=None)
hypothesis_settings.load_profile("o2o")

# The suite runs the services as the API and the worker do: with the domains subscribed to the
# order record's events.
wiring.connect()

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


def _require_test_database() -> str:
    url = get_settings().database_url
    db_name = url.rsplit("/", 1)[-1].split("?")[0]
    if get_settings().env != "test" or not db_name.endswith("_test"):
        pytest.exit(
            "Refusing to run: tests need O2O_ENV=test and a database whose name ends in _test "
            "(run them with `make test`).",
            returncode=2,
        )
    return url


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def owner_url() -> str:
    """The owner role's URL (it migrates and may empty tables); the suite runs as the runtime role."""
    return os.environ.get("O2O_OWNER_DATABASE_URL") or _require_test_database()


@functools.cache
def owner_engine() -> Engine:
    """An engine connected as the owner role, for migrations and clean-up only."""
    return create_engine(owner_url(), poolclass=NullPool)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    url = _require_test_database()
    command.upgrade(alembic_config(owner_url()), "head")
    eng = create_engine(url, pool_pre_ping=True)
    yield eng
    eng.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def db(connection: Connection) -> Iterator[Session]:
    """A session whose commits are savepoints inside the test's rolled-back transaction."""
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield session
    session.close()


@pytest.fixture(scope="session")
def _built_app():
    """The application, built once per run (building it costs more than most tests)."""
    from main import create_app

    return create_app()


@pytest.fixture
def app(_built_app, db: Session):
    """The application with its request sessions running inside this test's transaction."""

    def _session() -> Iterator[Session]:
        # Keep what the test set up before the request: a request that fails rolls back its
        # own work only, as it would against the real database.
        db.commit()
        db.info[COMMIT_ON_RETURN] = True
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    class _Runner:
        # Async endpoints run their services on the test's session, in its transaction.
        async def run(self, fn, *args, **kwargs):
            return fn(db, *args, **kwargs)

    @contextmanager
    def _in_request():
        db.commit()
        try:
            yield
            db.commit()
        except BaseException:
            db.rollback()
            raise

    async def _runner():
        with _in_request():
            yield _Runner()

    async def _driver():
        # The driver connection (nearby, search, the next-job claim, a placement's user and key):
        # the same connection's sync side. What it wrote bypassed the session, whose copies of
        # those rows are then stale.
        with _in_request():
            yield SyncDriver(db)
        db.expire_all()

    # The console shares this dict, so it is changed in place, never replaced.
    _built_app.dependency_overrides[get_session] = _session
    _built_app.dependency_overrides[get_runner] = _runner
    _built_app.dependency_overrides[get_writer_runner] = _runner
    _built_app.dependency_overrides[get_driver] = _driver
    # A lent connection is the same, for the block that borrows it.
    _built_app.dependency_overrides[get_driver_lender] = lambda: asynccontextmanager(_driver)
    yield _built_app
    _built_app.dependency_overrides.clear()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        c.event_hooks["response"].append(check_422_is_documented(app.openapi()))
        yield c


@pytest.fixture(autouse=True)
def _clean_redis_keys() -> Iterator[None]:
    """Forget rate-limit windows and periodic locks between tests (broker keys are left alone)."""
    yield
    r = get_redis()
    for pattern in ("LIMITS:*", "o2o:*"):
        keys = list(r.scan_iter(match=pattern, count=1000))
        if keys:
            r.delete(*keys)


@pytest.fixture(scope="session")
def celery_worker_process(engine: Engine) -> Iterator[subprocess.Popen]:
    """A real Celery worker on the test Redis and database (prefork, 2 processes)."""
    from o2o.worker import app as celery_app

    logfile = ARTIFACTS / "celery-worker.log"
    ARTIFACTS.mkdir(exist_ok=True)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "o2o.worker",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "--without-gossip",
            "--without-mingle",
            "-n",
            "test-worker@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(logfile, "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited; see {logfile}")
        if celery_app.control.ping(timeout=0.5):
            break
    else:
        proc.kill()
        raise RuntimeError(f"Celery worker did not answer in 60 s; see {logfile}")
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def truncate_all(engine: Engine) -> None:
    """Empty every table (for tests that had to commit for real), as the owner: the runtime role
    may not TRUNCATE, and the audit trail refuses DELETE."""
    with owner_engine().begin() as conn:
        tables = conn.scalars(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN ('alembic_version', 'spatial_ref_sys')"
            )
        ).all()
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def committed(engine):
    """For tests that commit for real (races, workers, idempotency): every table is emptied
    before and after."""
    truncate_all(engine)
    yield
    truncate_all(engine)
