"""The ASGI app: `uvicorn export_api.app:app` (settings from the environment, SPEC §8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from export_api import ccpa, dagster_status, openapi, routes
from export_api.auth import TokenVerifier
from export_api.errors import exception_handlers
from export_api.metrics import ApiMetrics, RequestMetricsMiddleware
from export_pipelines.domain import ccpa as ccpa_domain
from export_pipelines.domain.clients import mongo_client, s3_client
from export_pipelines.domain.records import ExportStore
from export_pipelines.domain.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    """Build an app; tests pass their own settings, production reads the environment."""
    settings = settings or Settings.from_env()
    verifier = TokenVerifier(settings.jwt_public_key)  # a bad key fails here, at start-up
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Open MongoDB/S3/HTTP clients once per process and make sure the dedupe index exists."""
        # Fail fast (5 s) instead of pymongo's 30 s, so a dead database shows as errors, not hangs.
        mongo = mongo_client(settings, serverSelectionTimeoutMS=5000)
        http = dagster_status.http_client()
        try:
            db = mongo[settings.mongodb_db]
            store = ExportStore(db)
            await run_in_threadpool(store.ensure_indexes)
            await run_in_threadpool(ccpa_domain.ensure_indexes, db)  # membership, tombstones, audit
            s3 = await run_in_threadpool(s3_client, settings)
            metrics.exports.store = store
            app.state.api = routes.ApiState(settings, verifier, metrics, db, store, s3, http)
            yield
        finally:
            metrics.exports.store = None
            await http.aclose()
            mongo.close()

    app_routes: list[BaseRoute] = [*routes.routes]
    if settings.dev_mode:
        app_routes += routes.dev_routes
    app_routes += ccpa.routes  # DELETE /ccpa/users/{userId} (SPEC §7), supreme tokens only
    app_routes += openapi.routes  # /openapi.json and /docs, generated from the routes above
    return Starlette(
        routes=app_routes,
        middleware=[Middleware(RequestMetricsMiddleware, metrics=metrics)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )


app = create_app()
