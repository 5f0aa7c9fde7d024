"""The service's own endpoints: `GET /heartbeat`, `GET /metrics`, and `POST /dev/token` (DEV_MODE only)."""

from __future__ import annotations

import time

import pymongo
from fastapi import APIRouter
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from export_api import auth
from export_api.errors import UNAVAILABLE_MESSAGE, ApiError, error_response
from export_api.models.service import DevTokenRequest, Heartbeat, Token
from export_api.routing import ApiRoute, error_responses
from export_api.state import NO_STORE, api_state

router = APIRouter(route_class=ApiRoute, tags=["meta"])
dev_router = APIRouter(route_class=ApiRoute, tags=["dev"])  # mounted only when DEV_MODE is on


@router.get(
    "/heartbeat",
    summary="Liveness of the service and its database",
    operation_id="heartbeat",
    response_model=Heartbeat,
    response_description="The database answers.",
    openapi_extra=error_responses(503),
)
def heartbeat(request: Request) -> Response:
    """200 while MongoDB answers a ping within 2 s; 503 otherwise, for load balancers."""
    try:
        with pymongo.timeout(2.0):
            api_state(request).db.command("ping")
    except PyMongoError:
        return error_response(503, UNAVAILABLE_MESSAGE)
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="metrics",
    response_class=PlainTextResponse,
    response_description="Prometheus text exposition format.",
)
def metrics(request: Request) -> Response:
    """Prometheus exposition; export counts come from a short cache of MongoDB counts."""
    content, content_type = api_state(request).metrics.render()
    return Response(content, headers={"Content-Type": content_type})


@dev_router.post(
    "/dev/token",
    summary="Mint a development token (DEV_MODE only)",
    operation_id="devToken",
    response_model=Token,
    response_description="A signed RS256 token.",
    openapi_extra=error_responses(400, 413),
)
def dev_token(request: Request, body: DevTokenRequest) -> Response:
    """Mint a token for local use."""
    state = api_state(request)
    if not state.settings.jwt_private_key:
        raise ApiError(500, "Dev mode is on but no JWT_PRIVATE_KEY is configured.")
    token = auth.issue_dev_token(
        state.settings.jwt_private_key,
        user_id=body.userId,
        campaigns={body.campaignId: body.permissions},
        supreme=body.supreme,
        now=int(time.time()),
        expires_in=body.expiresIn,
    )
    return JSONResponse({"token": token}, headers=NO_STORE)
