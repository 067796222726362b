"""Operations closed by default: /metrics once and behind a token outside development and test,
demo accounts never in production, nosniff everywhere and HSTS in production."""

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

import main
from o2o import health
from o2o.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "env": "production",
    "database_url": "postgresql+psycopg://app:pw@db:5432/o2o",
    "token_secret_key": "t" * 40,
    "session_secret_key": "s" * 40,
    "identity_pepper": "p" * 40,
}


def test_metrics_is_mounted_once(client):
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/v1/metrics").status_code == 404
    assert "/metrics" not in client.get("/api/v1/openapi.json").json()["paths"]


def test_metrics_is_closed_in_production_without_its_token(client, monkeypatch):
    monkeypatch.setattr(health, "get_settings", lambda: Settings(**PRODUCTION))
    assert client.get("/metrics").status_code == 404
    with_token = Settings(**PRODUCTION, metrics_token="m" * 40)
    monkeypatch.setattr(health, "get_settings", lambda: with_token)
    assert client.get("/metrics").status_code == 404
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 404
    right = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
    assert right.status_code == 200 and "http_requests" in right.text


def test_api_sends_nosniff_and_hsts_in_production(client, monkeypatch):
    r = client.get("/healthz")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in r.headers
    monkeypatch.setattr(main, "get_settings", lambda: Settings(**PRODUCTION))
    production_app = main.create_app()
    with TestClient(production_app) as production:
        r = production.get("/healthz")
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_demo_data_refuses_production():
    env = {k: v for k, v in os.environ.items() if not k.startswith("O2O_")}
    env.update({f"O2O_{k.upper()}": v for k, v in PRODUCTION.items()})
    env["O2O_DATABASE_URL"] = os.environ["O2O_DATABASE_URL"]
    result = subprocess.run(
        [sys.executable, "-m", "o2o", "demo-data"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "refuses O2O_ENV=production" in result.stderr
