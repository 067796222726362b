"""Build the application: API routers under /api/v1, operations endpoints, error handlers."""

import gc
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from dispatch.router import router as dispatch_router
from o2o import db, health, ratelimit, wiring
from o2o.analytics.router import router as analytics_router
from o2o.api_links import LINKS
from o2o.config import get_settings
from o2o.console.app import create_console_app
from o2o.errors import install_error_handlers
from o2o.members.router import router as members_router
from o2o.observability import EdgeMiddleware, configure_logging
from o2o.openapi import install_error_docs, install_links
from o2o.order_flow.pickup_point_router import router as pickup_point_counter_router
from o2o.order_flow.router import router as orders_router
from o2o.order_flow.substitution_router import router as substitutions_router
from o2o.payments.router import router as payments_router
from o2o.users.router import router as users_router
from o2o.webhooks.router import router as webhooks_router
from prescriptions.router import router as prescriptions_router
from prescriptions.safety_router import router as safety_router
from stores.pickup_point_router import router as pickup_points_router
from stores.router import router as stores_router
from stores.search_router import router as stores_search_router

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    # A request is matched against the routes in order, so the hottest paths come first: the
    # nearby list and search (before the stores router, so /stores/nearby is never read as a
    # store id), then a courier rush's claims and locations (no other router's paths start
    # /dispatch, /couriers, /admin/couriers or /sla: tests/o2o/test_routes.py), then orders.
    router.include_router(stores_search_router)
    router.include_router(dispatch_router)
    router.include_router(orders_router)
    router.include_router(users_router)
    router.include_router(substitutions_router)
    router.include_router(pickup_points_router)
    router.include_router(pickup_point_counter_router)
    router.include_router(prescriptions_router)
    router.include_router(safety_router)
    router.include_router(webhooks_router)
    router.include_router(payments_router)
    router.include_router(members_router)
    router.include_router(analytics_router)
    # Store paths take integer ids only (/stores/{id:int}): /stores/nearby never lands here.
    router.include_router(stores_router)
    router.include_router(health.router)
    return router


def create_app() -> FastAPI:
    """Create the FastAPI application."""
    settings = get_settings()
    wiring.connect()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(json_logs=settings.env == "production")
        # The hot reads' connections (o2o.db.DriverConnection: the nearby list, search), the
        # async endpoints' sessions (o2o.db.SessionRunner) and the async writers' (placing an
        # order: o2o.db.WriterRunner), in this event loop: lifespan state, which each request of
        # this serving reads as request.state.driver_pool, .async_sessions and .writer_sessions.
        pool = db.make_driver_pool(settings)
        await pool.open()
        engine = db.make_async_engine(settings)
        writers = db.make_async_engine(settings, pool_size=settings.db_pool_size)
        if settings.env == "production":
            # What the worker built to serve (modules, routes, schemas, settings) lives as long
            # as it does: kept out of the collector's full passes, which would otherwise walk it
            # all and pause every request in flight on this worker (the tail of `make load`).
            # Not in tests, whose one process serves an application per test.
            gc.collect()
            gc.freeze()
        try:
            yield {
                "driver_pool": pool,
                "async_sessions": db.async_sessions(engine),
                "writer_sessions": db.async_sessions(writers),
            }
        finally:
            await pool.close()
            await engine.dispose()
            await writers.dispose()
            await ratelimit.close_async()

    app = FastAPI(
        title="O2O pharmacy platform",
        version="0.1.0",
        description=(
            "Nearest stocked pharmacy, prescriptions, pickup or delivery within 2 hours. "
            "Error messages follow Accept-Language (zh-CN: Simplified Chinese, otherwise "
            "English; the answer's Content-Language says which); error codes never change."
        ),
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    app.include_router(api_router())
    install_error_docs(app)
    install_links(app, LINKS)
    app.mount("/console", create_console_app(app.dependency_overrides), name="console")
    app.add_middleware(
        EdgeMiddleware, max_bytes=settings.max_body_bytes, hsts=settings.env == "production"
    )
    return app


app = create_app()
