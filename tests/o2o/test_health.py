import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from o2o import health
from tests.spare_services import SparePostgres, SpareRedis


def test_healthz_and_readyz_when_all_is_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    # Also under the API prefix, as the contract lists them.
    assert client.get("/api/v1/readyz").status_code == 200


@pytest.fixture
def spare_pg():
    pg = SparePostgres()
    pg.start()
    yield pg
    pg.destroy()


def test_readyz_reports_a_stopped_postgres_and_recovers(client, monkeypatch, spare_pg):
    engine = create_engine(spare_pg.url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    monkeypatch.setattr(health, "get_engine", lambda: engine)
    assert client.get("/readyz").status_code == 200

    spare_pg.stop()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "not_ready"
    assert r.json()["error"]["details"] == {"database": "down", "redis": "ok"}

    spare_pg.start()
    assert client.get("/readyz").status_code == 200
    engine.dispose()


def test_readyz_reports_a_stopped_redis(client, monkeypatch):
    spare = SpareRedis()
    spare.start()
    try:
        r_client = redis.Redis.from_url(spare.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        monkeypatch.setattr(health, "get_redis", lambda: r_client)
        assert client.get("/readyz").status_code == 200
        spare.stop()
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["details"] == {"database": "ok", "redis": "down"}
    finally:
        spare.destroy()


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample of the metrics page, read by prometheus-client's own parser."""
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    return value


def test_metrics_count_requests_by_route(client):
    route = {"method": "GET", "route": "/healthz"}
    count = ("o2o_http_requests_total", {**route, "status": "200"})
    timed = ("o2o_http_request_duration_seconds_count", route)
    client.get("/healthz")
    before = client.get("/metrics").text
    client.get("/healthz")
    client.get("/healthz")
    after = client.get("/metrics").text
    for name, labels in (count, timed):
        assert _sample(after, name, **labels) == _sample(before, name, **labels) + 2
    assert "o2o_http_request_duration_seconds_bucket" in after
