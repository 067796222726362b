"""Liveness, readiness (PostgreSQL and Redis) and Prometheus metrics for operations."""

import secrets

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from o2o.config import get_settings
from o2o.db import get_engine
from o2o.errors import NotFound, error_body
from o2o.i18n import gettext as _
from o2o.redis import get_redis

router = APIRouter(tags=["operations"])
# Mounted once, at the root, outside the API and its schema: closed unless O2O_METRICS_TOKEN is
# given (as a bearer token), open without one only in development and test.
metrics_router = APIRouter(include_in_schema=False)


def check_database() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def check_redis() -> bool:
    try:
        return bool(get_redis().ping())
    except Exception:
        return False


@router.get("/healthz")
def healthz() -> dict:
    """Say the process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is down"}})
def readyz():
    """Say whether PostgreSQL and Redis answer; 503 when either does not."""
    checks = {
        "database": "ok" if check_database() else "down",
        "redis": "ok" if check_redis() else "down",
    }
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return JSONResponse(
        error_body("not_ready", _("Not ready: {down} unreachable.").format(down=down), checks),
        status_code=503,
        headers={"Retry-After": "5"},
    )


@metrics_router.get("/metrics", response_class=Response)
def metrics(authorization: str | None = Header(None)) -> Response:
    """Expose Prometheus metrics to the holder of the metrics token."""
    settings = get_settings()
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if token:
        given = (authorization or "").removeprefix("Bearer ").encode()
        if not secrets.compare_digest(given, token.encode()):
            raise NotFound(_("No such page."), code="not_found")
    elif settings.env not in ("development", "test"):
        raise NotFound(_("No such page."), code="not_found")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
