"""Fault-test harness: private PostgreSQL and Redis servers that a test may stop, and the API
(uvicorn) and Celery worker/beat as real subprocesses against them."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.conftest import ARTIFACTS, alembic_config
from tests.polling import wait_for
from tests.spare_services import SparePostgres, SpareRedis, free_port, kill, spawn


@pytest.fixture(scope="package")
def spare_pg() -> Iterator[SparePostgres]:
    """A private PostGIS cluster migrated to head (tests may stop and start it)."""
    pg = SparePostgres()
    pg.start()
    try:
        command.upgrade(alembic_config(pg.url), "head")
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def spare_engine(spare_pg: SparePostgres) -> Iterator[Engine]:
    engine = create_engine(spare_pg.url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    # The cluster serves every test of the package: each starts without the webhook work an
    # earlier one left pending (a test's relay would spend its passes retrying another's
    # deliveries to an address that does not answer, and miss its own deadline).
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox_deliveries, outbox_events"))
    yield engine
    engine.dispose()


@pytest.fixture
def spare_redis() -> Iterator[SpareRedis]:
    server = SpareRedis()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def service_env(pg_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment of a platform process pointed at the private servers."""
    env = dict(os.environ)
    env.update(O2O_ENV="test", O2O_DATABASE_URL=pg_url, O2O_REDIS_URL=redis_url)
    env.update(extra)
    return env


def celery_worker(env: dict[str, str], log_name: str, *extra: str) -> subprocess.Popen:
    """A real worker of the fault-test app (the platform app plus test-only tasks)."""
    return spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.faults.fault_app",
            "worker",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{log_name}@%h",
            *extra,
        ],
        env,
        log_name + ".log",
    )


@contextmanager
def running_api(env: dict[str, str], log_name: str = "faults-api.log") -> Iterator[str]:
    """Serve the app with uvicorn in a subprocess; yield its base URL."""
    port = free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
        ],
        env,
        log_name,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"uvicorn exited; see {ARTIFACTS / log_name}")
        try:
            return httpx.get(base + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 120, "the API to start", interval=0.5)
        yield base
    finally:
        kill(proc)
