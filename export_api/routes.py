"""HTTP endpoints (SPEC §6) and the state they share.

Blocking pymongo/boto3 calls run in sync endpoints (Starlette runs those in its thread
pool) or through `run_in_threadpool`, never on the event loop.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pymongo
from pymongo.errors import PyMongoError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api import auth, dagster_launch, observability
from export_api.checks import load_export, parse_date_time, queue_full, refuse_unknown_destinations
from export_api.errors import SCOPE_KEY, UNAVAILABLE_MESSAGE, ApiError, error_response
from export_api.models.base import MAX_BODY_BYTES, MAX_LIMIT, MAX_PAGE, NOT_JSON, TOO_LARGE
from export_api.state import NO_STORE, ApiState, api_state, authorize_report
from export_core.export_types import (
    EXPORT_TYPES,
    ExportRequest,
    InvalidExportRequest,
    parse_export_request,
)
from export_core.records import (
    ACTIVE,
    SORT_FIELDS,
    CreateResult,
    RequestOptions,
    TooManyPending,
    utcnow,
)
from export_core.schedules import InvalidSchedule, parse_destinations
from export_core.views import HIDDEN_FIELDS, iso_utc, record_view, to_json  # noqa: F401 (shared)

MAX_DEV_TOKEN_SECONDS = 30 * 24 * 3600
DEV_TOKEN_FIELDS = frozenset({"userId", "campaignId", "permissions", "supreme", "expiresIn"})
RERUN_RETRY_AFTER_SECONDS = 5  # a re-run refused for a moment (engine unreachable, last run ending)


# -- JSON rendering ---------------------------------------------------------------------


# -- request parsing --------------------------------------------------------------------


async def json_body(request: Request) -> Any:
    """The parsed JSON body; bodies are a few small fields, so anything large is refused early."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, TOO_LARGE)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, NOT_JSON) from None


def _int_param(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # The length check comes first: int() of thousands of digits is refused by Python itself.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and low <= int(raw) <= high):
        raise ApiError(400, f"'{name}' must be an integer from {low} to {high}.", raw[:100])
    return int(raw)


def _choice_param(params: QueryParams, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in choices:
        raise ApiError(400, f"'{name}' must be one of: {', '.join(choices)}.", raw[:100])
    return raw


def parse_export_post(body: object) -> tuple[ExportRequest, RequestOptions]:
    """An export POST's request and its options: `since` (SPEC §12), an instant not in the future, only for
    the types whose rows say when they were created (ExportType.since_field), and `destinations` (SPEC §13),
    ids checked against the campaign's by `refuse_unknown_destinations`; 400 naming the field."""
    extra = {k: body.pop(k) for k in ("since", "destinations") if k in body} if isinstance(body, dict) else {}
    try:
        request = parse_export_request(body)
        destinations = parse_destinations(extra.get("destinations", []))
    except (InvalidExportRequest, InvalidSchedule) as exc:
        raise ApiError(400, str(exc), exc.field) from None
    if "since" not in extra:
        return request, RequestOptions(destinations=destinations)
    since = parse_date_time(extra["since"], "since")
    if since > utcnow():
        raise ApiError(400, "'since' must not be in the future.", "since")
    if request.export_type.since_field is None:
        offered = ", ".join(name for name, t in EXPORT_TYPES.items() if t.since_field is not None)
        raise ApiError(
            400, f"exportType '{request.export_type.name}' does not take 'since'; these do: {offered}.", "since"
        )
    return request, RequestOptions(since=since, destinations=destinations)


def list_params(params: QueryParams) -> dict[str, Any]:
    export_type = params.get("exportType")
    if export_type is not None and export_type not in EXPORT_TYPES:
        raise ApiError(400, f"Invalid export type: '{export_type[:100]}'.")
    return {
        "export_type": export_type,
        "page": _int_param(params, "page", 0, 0, MAX_PAGE),
        "limit": _int_param(params, "limit", 20, 1, MAX_LIMIT),
        "sort": _choice_param(params, "sort", "created", tuple(SORT_FIELDS)),
        "sort_order": _choice_param(params, "sortOrder", "desc", ("asc", "desc")),
    }


# -- endpoints --------------------------------------------------------------------------


class CampaignExports(HTTPEndpoint):
    """`/campaigns/{campaignId}/exports`; one endpoint so a 405 lists both methods in `Allow`."""

    async def post(self, request: Request) -> Response:
        """Queue an export; an identical PENDING/TRIGGERED one (type, dateKey, format) is returned instead (200).
        ---
        summary: Request an export
        operationId: createExport
        tags: [exports]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ExportRequest"}
        responses:
          "201":
            description: A new PENDING export.
            content: {application/json: {schema: {$ref: "#/components/schemas/ExportRecord"}}}
          "200":
            description: The identical PENDING/TRIGGERED export (nothing new is queued).
            content: {application/json: {schema: {$ref: "#/components/schemas/ExportRecord"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "413": {$ref: "#/components/responses/PayloadTooLarge"}
          "429": {$ref: "#/components/responses/TooManyRequests"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        principal = authorize_report(request, campaign_id)
        export_request, options = parse_export_post(await json_body(request))
        request_id = request.scope.get(SCOPE_KEY)
        try:
            result = await run_in_threadpool(
                _create_export, state, campaign_id, export_request, principal.user_id, request_id, options
            )
        except TooManyPending as exc:
            raise queue_full(exc) from None
        observability.set_export_id(str(result.record["id"]))
        return JSONResponse(record_view(result.record), 201 if result.created else 200)

    def get(self, request: Request) -> Response:
        """A page of the campaign's records, newest first unless asked otherwise (sync: pymongo).
        ---
        summary: List a campaign's exports
        operationId: listExports
        tags: [exports]
        security: [{bearerAuth: []}]
        parameters:
          - {$ref: "#/components/parameters/campaignId"}
          - {$ref: "#/components/parameters/exportType"}
          - {$ref: "#/components/parameters/page"}
          - {$ref: "#/components/parameters/limit"}
          - {$ref: "#/components/parameters/sort"}
          - {$ref: "#/components/parameters/sortOrder"}
        responses:
          "200":
            description: One page of records.
            content: {application/json: {schema: {$ref: "#/components/schemas/ExportList"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        authorize_report(request, campaign_id)
        params = list_params(request.query_params)
        state.campaigns.name(campaign_id)
        records, total = state.store.list_page(campaign_id, **params)
        exports = [record_view(r) for r in records]
        return JSONResponse({"exports": exports, "page": params["page"], "limit": params["limit"], "total": total})


def _create_export(
    state: ApiState,
    campaign_id: str,
    request: ExportRequest,
    user_id: str,
    request_id: str | None,
    options: RequestOptions,
) -> CreateResult:
    """The new record, or the identical PENDING/TRIGGERED one, which then takes the request's destinations
    too (a record that ended meanwhile is no duplicate any more: a new one is made)."""
    campaign_name = state.campaigns.name(campaign_id)
    refuse_unknown_destinations(state.db, campaign_id, options.destinations)
    while True:
        result = state.store.create(
            campaign_id=campaign_id,
            campaign_name=campaign_name,
            export_type=request.export_type.name,
            requester_user_id=user_id,
            date_key=request.date_key,
            include_all_markets=request.include_all_markets,
            request_id=request_id,
            max_pending=state.settings.max_pending_per_campaign,
            format=request.format,
            options=options,
        )
        if result.created or not options.destinations:
            return result
        joined = state.store.add_destinations(str(result.record["_id"]), options.destinations)
        if joined is not None:
            return CreateResult(joined, False)


async def get_export(request: Request) -> Response:
    """One record, its download link(s) when finished, and its Dagster run's status.
    ---
    summary: Get one export
    operationId: getExport
    tags: [exports]
    security: [{bearerAuth: []}]
    parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/exportId"}]
    responses:
      "200":
        description: The record; `path`/`paths` when FINISHED; `run` from Dagster.
        content: {application/json: {schema: {$ref: "#/components/schemas/ExportDetail"}}}
      "404": {$ref: "#/components/responses/NotFound"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    state = api_state(request)
    campaign_id = request.path_params["campaignId"]
    authorize_report(request, campaign_id)
    record, links = await run_in_threadpool(load_export, state, campaign_id, request.path_params["exportId"])
    observability.set_export_id(str(record["_id"]))
    body = {**record_view(record), **links}
    body["run"] = await state.runs.read(record.get("runId"), export_ended=record.get("status") not in ACTIVE)
    return JSONResponse(body, headers=NO_STORE)


async def rerun_export(request: Request) -> Response:
    """Re-run a FAILED or EXPIRED export (SPEC §4): it is TRIGGERED at once and its run is queued.
    ---
    summary: Re-run a failed or expired export
    operationId: rerunExport
    tags: [exports]
    security: [{bearerAuth: []}]
    parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/exportId"}]
    responses:
      "202":
        description: >-
          The record, TRIGGERED, with the `runId` of its new Dagster run (a re-execution of its last
          run, or a fresh run when Dagster has none), which waits its turn in the one-at-a-time queue.
        content: {application/json: {schema: {$ref: "#/components/schemas/ExportRecord"}}}
      "409": {$ref: "#/components/responses/Conflict"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    state = api_state(request)
    campaign_id, export_id = request.path_params["campaignId"], request.path_params["exportId"]
    principal = authorize_report(request, campaign_id)
    # Claimed first (FAILED/EXPIRED → TRIGGERED in one conditional update): of identical
    # concurrent calls one wins and launches; the others find it TRIGGERED and get 409.
    claim, before = await run_in_threadpool(_claim_rerun, state, campaign_id, export_id, principal.user_id)
    observability.set_export_id(export_id)
    try:
        run_id = await dagster_launch.launch_rerun(state.http, state.settings.dagster_graphql_url, before)
    except dagster_launch.PreviousRunActive:
        await run_in_threadpool(state.store.release_rerun, export_id, claim=claim, before=before)
        raise ApiError(
            409,
            "This export's last run is still ending; please try again in a moment.",
            headers={"Retry-After": str(RERUN_RETRY_AFTER_SECONDS)},
        ) from None
    except dagster_launch.LaunchFailed:
        await run_in_threadpool(state.store.release_rerun, export_id, claim=claim, before=before)
        raise ApiError(
            503,
            "The export engine is unreachable right now, so the export was not re-run; please try again in a moment.",
            headers={"Retry-After": str(RERUN_RETRY_AFTER_SECONDS)},
        ) from None
    except BaseException:
        await run_in_threadpool(state.store.release_rerun, export_id, claim=claim, before=before)
        raise
    record = await run_in_threadpool(_rerun_launched, state, export_id, claim, run_id)
    return JSONResponse(record_view(record), 202)


def _claim_rerun(state: ApiState, campaign_id: str, export_id: str, user_id: str) -> tuple[str, dict[str, Any]]:
    """(claim, the record before it) for a re-run; ApiError 404 or 409 when there is nothing to re-run."""
    claimed = state.store.claim_rerun(export_id, campaign_id=campaign_id, requested_by=user_id)
    if claimed is None:
        record = state.store.get(export_id)
        if record is None or record.get("campaignId") != campaign_id:
            raise ApiError(404, "Export not found.", export_id[:100])
        status = str(record.get("status"))
        raise ApiError(409, f"Only a FAILED or EXPIRED export can be re-run; this one is {status}.", status)
    claim, before = claimed
    if before.get("exportType") not in EXPORT_TYPES:  # failed as an invalid type: no job could run it
        state.store.release_rerun(export_id, claim=claim, before=before)
        raise ApiError(409, "This export's type is not offered any more, so it cannot be re-run.")
    return claim, before


def _rerun_launched(state: ApiState, export_id: str, claim: str, run_id: str) -> dict[str, Any]:
    """The record with its new run; as it is now when that run has already taken it over."""
    record = state.store.rerun_launched(export_id, claim=claim, run_id=run_id) or state.store.get(export_id)
    if record is None:  # deleted from the database meanwhile
        raise ApiError(404, "Export not found.", export_id[:100])
    return record


def heartbeat(request: Request) -> Response:
    """200 while MongoDB answers a ping within 2 s; 503 otherwise, for load balancers.
    ---
    summary: Liveness of the service and its database
    operationId: heartbeat
    tags: [meta]
    responses:
      "200":
        description: The database answers.
        content: {application/json: {schema: {$ref: "#/components/schemas/Heartbeat"}}}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    try:
        with pymongo.timeout(2.0):
            api_state(request).db.command("ping")
    except PyMongoError:
        return error_response(503, UNAVAILABLE_MESSAGE)
    return JSONResponse({"status": "ok"})


def metrics(request: Request) -> Response:
    """Prometheus exposition; export counts come from a short cache of MongoDB counts.
    ---
    summary: Prometheus metrics
    operationId: metrics
    tags: [meta]
    responses:
      "200":
        description: Prometheus text exposition format.
        content: {text/plain: {schema: {type: string}}}
    """
    content, content_type = api_state(request).metrics.render()
    return Response(content, headers={"Content-Type": content_type})


async def dev_token(request: Request) -> Response:
    """Mint a token for local use; only mounted when DEV_MODE is on.
    ---
    summary: Mint a development token (DEV_MODE only)
    operationId: devToken
    tags: [dev]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/DevTokenRequest"}
    responses:
      "200":
        description: A signed RS256 token.
        content: {application/json: {schema: {$ref: "#/components/schemas/Token"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "413": {$ref: "#/components/responses/PayloadTooLarge"}
    """
    state = api_state(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    unknown = sorted(str(k) for k in body if k not in DEV_TOKEN_FIELDS)
    if unknown:
        raise ApiError(400, f"Unknown field in the request body: '{unknown[0][:100]}'.")
    user_id, campaign_id, permissions = body.get("userId"), body.get("campaignId"), body.get("permissions")
    supreme, expires_in = body.get("supreme", False), body.get("expiresIn", 3600)
    if not isinstance(user_id, str) or not user_id:
        raise ApiError(400, "'userId' must be a non-empty string.")
    if not isinstance(campaign_id, str) or not campaign_id:
        raise ApiError(400, "'campaignId' must be a non-empty string.")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise ApiError(400, "'permissions' must be a list of strings.")
    if not isinstance(supreme, bool):
        raise ApiError(400, "'supreme' must be true or false.")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= MAX_DEV_TOKEN_SECONDS:
        raise ApiError(400, f"'expiresIn' must be an integer number of seconds from 1 to {MAX_DEV_TOKEN_SECONDS}.")
    if not state.settings.jwt_private_key:
        raise ApiError(500, "Dev mode is on but no JWT_PRIVATE_KEY is configured.")
    token = auth.issue_dev_token(
        state.settings.jwt_private_key,
        user_id=user_id,
        campaigns={campaign_id: permissions},
        supreme=supreme,
        now=int(time.time()),
        expires_in=expires_in,
    )
    return JSONResponse({"token": token}, headers=NO_STORE)


routes = [
    Route("/heartbeat", heartbeat, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/campaigns/{campaignId}/exports", CampaignExports),
    Route("/campaigns/{campaignId}/exports/{exportId}", get_export, methods=["GET"]),
    Route("/campaigns/{campaignId}/exports/{exportId}/rerun", rerun_export, methods=["POST"]),
]

dev_routes = [
    Route("/dev/token", dev_token, methods=["POST"]),
]
