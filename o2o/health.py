"""Liveness, readiness (PostgreSQL and Redis) and Prometheus metrics for operations."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from o2o.db import get_engine
from o2o.errors import error_body
from o2o.redis import get_redis

router = APIRouter(tags=["operations"])


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
        error_body("not_ready", f"Not ready: {down} unreachable.", checks),
        status_code=503,
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Expose Prometheus metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
