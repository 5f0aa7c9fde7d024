"""The ASGI app: `uvicorn export_api.app:app` (settings from the environment, SPEC §8).

`app` is built on first access (module `__getattr__`), so importing this module for
`create_app` never reads the environment, and a misconfigured process stops with one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from export_api import (
    ccpa,
    dagster_status,
    destinations,
    docs_page,
    exports,
    openapi,
    reruns,
    schedules,
    service,
    state,
    webhooks,
)
from export_api.auth import TokenVerifier
from export_api.errors import exception_handlers
from export_api.metrics import ApiMetrics, RequestMetricsMiddleware
from export_api.observability import RequestContextMiddleware, install_log_handler, json_log_handler, remove_log_handler
from export_api.routing import validation_error_handler
from export_core import ccpa as ccpa_domain
from export_core import webhooks as webhooks_domain
from export_core.clients import mongo_client, s3_client
from export_core.destination_store import DestinationStore
from export_core.records import ExportStore
from export_core.schedule_store import ScheduleStore
from export_core.secrets import SecretBox, SecretsKeyMissing
from export_core.settings import Settings

logger = logging.getLogger("export_api")

# A dead database shows as 503s within ~2 s instead of hung workers (SPEC §6): server selection,
# connecting and each socket read are bounded. CCPA deletions and list pages stay far below 10 s.
MONGO_TIMEOUTS = {"serverSelectionTimeoutMS": 1500, "connectTimeoutMS": 1500, "socketTimeoutMS": 10_000}


class ConfigurationError(RuntimeError):
    """The service must not start with this configuration."""


def create_app(settings: Settings | None = None) -> Starlette:
    """Build an app; tests pass their own settings, production reads the environment."""
    settings = settings or Settings.from_env()
    if not settings.jwt_public_key and not settings.dev_mode:
        raise ConfigurationError("JWT_PUBLIC_KEY is not set; outside DEV_MODE the API needs it to verify tokens.")
    try:
        secret_box = SecretBox.from_settings(settings)  # in dev mode the dev key file stands in for SECRETS_KEY
    except SecretsKeyMissing as exc:
        raise ConfigurationError(str(exc)) from None
    verifier = TokenVerifier(
        settings.jwt_public_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_seconds=settings.jwt_leeway_seconds,
    )  # a bad key fails here, at start-up
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Open MongoDB/S3/HTTP clients once per process and make sure the dedupe index exists."""
        log_handler = json_log_handler(settings.log_dir) if settings.log_dir else None
        if log_handler is not None:
            install_log_handler(log_handler)
        mongo = mongo_client(settings, **MONGO_TIMEOUTS)
        http = dagster_status.http_client()
        try:
            db = mongo[settings.mongodb_db]
            store = ExportStore(db)
            await run_in_threadpool(store.ensure_indexes)
            await run_in_threadpool(ccpa_domain.ensure_indexes, db)  # membership, tombstones, audit
            await run_in_threadpool(webhooks_domain.ensure_indexes, db)  # subscription slots, deliveries
            await run_in_threadpool(ScheduleStore(db).ensure_indexes)  # schedule slots (the limit)
            await run_in_threadpool(DestinationStore(db).ensure_indexes)  # destination slots (the limit)
            s3 = await run_in_threadpool(s3_client, settings)
            metrics.exports.store = store
            runs = dagster_status.RunStatusReader(http, settings.dagster_graphql_url)
            campaigns = state.CampaignNames(db)
            signer = state.DownloadSigner(s3, settings.signed_url_ttl_seconds)
            app.state.api = state.ApiState(
                settings, verifier, metrics, db, store, s3, http, runs, campaigns, signer, secret_box
            )
            yield
        finally:
            metrics.exports.store = None
            await http.aclose()
            mongo.close()
            if log_handler is not None:
                remove_log_handler(log_handler)

    app_routes: list[BaseRoute] = [*service.router.routes]  # /heartbeat, /metrics
    if settings.dev_mode:
        app_routes += service.dev_router.routes  # POST /dev/token
    app_routes += exports.router.routes  # /campaigns/{campaignId}/exports... (SPEC §6)
    app_routes += reruns.router.routes  # POST .../exports/{exportId}/rerun (SPEC §4)
    app_routes += ccpa.router.routes  # DELETE /ccpa/users/{userId} (SPEC §7), supreme tokens only
    app_routes += webhooks.router.routes  # /campaigns/{campaignId}/webhooks... (SPEC §11)
    app_routes += schedules.router.routes  # /campaigns/{campaignId}/schedules... (SPEC §12)
    app_routes += destinations.router.routes  # /campaigns/{campaignId}/destinations..., deliveries (SPEC §13)
    app_routes += openapi.router.routes  # /openapi.json, generated from the routes above
    app_routes += [*docs_page.router.routes, docs_page.assets]  # /docs: Swagger UI and its assets
    # FastAPI (a Starlette app): its path operations take pydantic models (export_api/routing.py). It
    # serves no document of its own: export_api/openapi.py and docs_page.py serve /openapi.json and /docs.
    return FastAPI(
        routes=app_routes,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # The request-id middleware is outermost: its access line and header cover every response.
        middleware=[Middleware(RequestContextMiddleware), Middleware(RequestMetricsMiddleware, metrics=metrics)],
        exception_handlers={**exception_handlers, RequestValidationError: validation_error_handler},
        lifespan=lifespan,
    )


_app: Starlette | None = None


def __getattr__(name: str) -> Any:
    """`export_api.app.app`, built from the environment on first use (uvicorn's `module:app`)."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        try:
            _app = create_app()
        except ConfigurationError as exc:
            raise SystemExit(f"export-service API: {exc}") from None
    return _app
