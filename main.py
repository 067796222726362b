"""Build the application: API routers under /api/v1, operations endpoints, error handlers."""

from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from o2o import health
from o2o.config import get_settings
from o2o.errors import install_error_handlers
from o2o.observability import BodySizeLimitMiddleware, RequestContextMiddleware, configure_logging
from o2o.users.router import router as users_router

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(users_router)
    router.include_router(health.router)
    return router


def create_app() -> FastAPI:
    """Create the FastAPI application."""
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(json_logs=settings.env == "production")
        yield

    app = FastAPI(
        title="O2O pharmacy platform",
        version="0.1.0",
        description="Nearest stocked pharmacy, prescriptions, pickup or delivery within 2 hours.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router())
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


app = create_app()
