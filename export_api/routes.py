"""HTTP endpoints (SPEC §6) and the state they share.

Blocking pymongo/boto3 calls run in sync endpoints (Starlette runs those in its thread
pool) or through `run_in_threadpool`, never on the event loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import httpx
import pymongo
from pymongo.database import Database
from pymongo.errors import PyMongoError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api import auth, dagster_launch, observability
from export_api.dagster_status import RunStatusReader
from export_api.errors import SCOPE_KEY, UNAVAILABLE_MESSAGE, ApiError, error_response
from export_api.metrics import ApiMetrics
from export_core.destination_store import DestinationStore
from export_core.export_types import (
    EXPORT_TYPES,
    ExportRequest,
    InvalidExportRequest,
    parse_export_request,
)
from export_core.records import (
    ACTIVE,
    FINISHED,
    SORT_FIELDS,
    CreateResult,
    ExportStore,
    RequestOptions,
    TooManyPending,
    utcnow,
)
from export_core.schedules import InvalidSchedule, parse_destinations
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.views import HIDDEN_FIELDS, iso_utc, record_view, to_json  # noqa: F401 (shared)

MAX_BODY_BYTES = 64 * 1024
MAX_LIMIT = 100
MAX_PAGE = 1_000_000  # keeps page * limit far inside what a MongoDB skip accepts
MAX_DEV_TOKEN_SECONDS = 30 * 24 * 3600
DEV_TOKEN_FIELDS = frozenset({"userId", "campaignId", "permissions", "supreme", "expiresIn"})
NO_STORE = {"Cache-Control": "no-store"}  # signed URLs and tokens must not sit in shared caches
RETRY_AFTER_SECONDS = 60  # PENDING exports drain one run at a time: minutes, not milliseconds
RERUN_RETRY_AFTER_SECONDS = 5  # a re-run refused for a moment (engine unreachable, last run ending)
CAMPAIGN_CACHE_SECONDS = 30.0  # a campaign's name changes rarely; a renamed one shows within this
CAMPAIGN_CACHE_SIZE = 10_000
SIGNED_URL_REUSE_MAX_SECONDS = 60.0  # a reused URL keeps at least TTL - this (and 90 % of the TTL)
SIGNED_URL_CACHE_SIZE = 10_000
MAX_DATE_TIME_LENGTH = 64


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Values kept for `seconds` after they were put; emptied when it reaches `size` entries."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds, self.size = seconds, size
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        kept = self._kept.get(key)
        return kept[1] if kept is not None and time.monotonic() - kept[0] < self.seconds else None

    def put(self, key: K, value: V) -> None:
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), value)


class CampaignNames:
    """Campaign id → name, read from `campaigns` and kept for CAMPAIGN_CACHE_SECONDS.

    Every POST and list needs the campaign (SPEC §6: unknown → 400); asking MongoDB each time
    doubled their round trips. Only campaigns that exist are kept, so a new campaign is usable
    at once; one deleted in the last CAMPAIGN_CACHE_SECONDS is still accepted (its exports
    then run on what is left of its data).
    """

    def __init__(self, db: Database) -> None:
        self.collection = db["campaigns"]
        self._found: ExpiringCache[str, str] = ExpiringCache(CAMPAIGN_CACHE_SECONDS, CAMPAIGN_CACHE_SIZE)

    def name(self, campaign_id: str) -> str:
        """The campaign's name ("" when it has none); ApiError 400 when there is no such campaign."""
        kept = self._found.get(campaign_id)
        if kept is not None:
            return kept
        campaign = self.collection.find_one({"_id": campaign_id}, {"name": 1})
        if campaign is None:
            raise ApiError(400, "Campaign not found.", campaign_id[:100])
        name = str(campaign.get("name") or "")
        self._found.put(campaign_id, name)
        return name


class DownloadSigner:
    """Signed GET URLs of export objects, each reused for a short while.

    The client signs with Signature Version 4 against the bucket region's endpoint
    (clients.s3_config); the objects carry their Content-Disposition from the upload.

    botocore spends ~0.5 ms of CPU per signature (endpoint rules, event hooks), about half of a
    GET's CPU in the API, and clients poll a finished export again and again. A URL is handed
    out again for at most min(60 s, TTL / 10) after it was signed, so every URL given out is
    valid for at least 90 % of SIGNED_URL_TTL_SECONDS.
    """

    def __init__(self, s3: Any, ttl_seconds: int) -> None:
        self.s3, self.ttl_seconds = s3, ttl_seconds
        reuse_seconds = min(SIGNED_URL_REUSE_MAX_SECONDS, ttl_seconds / 10)
        self._signed: ExpiringCache[tuple[str, str], str] = ExpiringCache(reuse_seconds, SIGNED_URL_CACHE_SIZE)

    def url(self, bucket: str, key: str) -> str:
        kept = self._signed.get((bucket, key))
        if kept is not None:
            return kept
        url = cast(
            str,
            self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.ttl_seconds
            ),
        )
        self._signed.put((bucket, key), url)
        return url


@dataclass(frozen=True)
class ApiState:
    """Everything endpoints need; built once by the app's lifespan (`app.state.api`)."""

    settings: Settings
    verifier: auth.TokenVerifier
    metrics: ApiMetrics
    db: Database
    store: ExportStore
    s3: Any
    http: httpx.AsyncClient
    runs: RunStatusReader
    campaigns: CampaignNames
    signer: DownloadSigner
    secret_box: SecretBox  # SECRETS_KEY: encrypts the secrets stored (webhooks')


def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


def authenticate(request: Request) -> auth.Principal:
    """The caller's principal, or 401 (for routes that are not tied to a campaign, e.g. CCPA)."""
    return api_state(request).verifier.authenticate(request.headers.get("authorization"))


def authorize_report(request: Request, campaign_id: str) -> auth.Principal:
    return auth.require_report(authenticate(request), campaign_id)


# -- JSON rendering ---------------------------------------------------------------------


def download_links(state: ApiState, record: dict[str, Any]) -> dict[str, Any]:
    """`path` (one key) or `paths` (several keys) of signed GET URLs for a downloadable record."""
    key = record.get("key")
    export_type = EXPORT_TYPES.get(record.get("exportType", ""))
    # A record claimed by a CCPA deletion (`deletion`, even before `date.deleted`) offers no download.
    deleted = record.get("date", {}).get("deleted") or record.get("deletion")
    if record.get("status") != FINISHED or deleted or not key or export_type is None:
        return {}
    # The bucket the export went to, as its record says (its plan's); a record from before
    # `meta.bucket` existed falls back to the type's configured bucket.
    bucket = str((record.get("meta") or {}).get("bucket") or state.settings.bucket_for(export_type.bucket))
    if isinstance(key, list):
        return {"paths": [{"key": k, "url": state.signer.url(bucket, k)} for k in key]}
    return {"path": state.signer.url(bucket, key)}


# -- request parsing --------------------------------------------------------------------


async def json_body(request: Request) -> Any:
    """The parsed JSON body; bodies are a few small fields, so anything large is refused early."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "Request body must be valid JSON.") from None


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


def parse_date_time(value: object, field: str) -> datetime:
    """An ISO 8601 date-time (with an offset or `Z`; without one it is UTC) as an aware UTC datetime;
    400 naming `field` for anything else (a date alone, too, so midnight of which zone is never guessed)."""
    refused = ApiError(400, f"'{field}' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'.", field)
    if not isinstance(value, str) or len(value) > MAX_DATE_TIME_LENGTH or not any(t in value for t in "Tt "):
        raise refused
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 or after 9999 once in UTC
        raise refused from None


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


def refuse_unknown_destinations(db: Database, campaign_id: str, ids: tuple[str, ...] | list[str]) -> None:
    """400 naming `destinations` when an id is not one of the campaign's destinations (SPEC §13)."""
    unknown = DestinationStore(db).unknown_ids(campaign_id, ids) if ids else []
    if unknown:
        raise ApiError(400, f"'{unknown[0][:100]}' is not a destination of this campaign.", "destinations")


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


def queue_full(exc: TooManyPending) -> ApiError:
    """The 429 of a request that would queue past MAX_PENDING_PER_CAMPAIGN."""
    return ApiError(
        429,
        f"This campaign already has {exc.limit} queued exports; please wait for some to start.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


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
    record, links = await run_in_threadpool(_load_export, state, campaign_id, request.path_params["exportId"])
    observability.set_export_id(str(record["_id"]))
    body = {**record_view(record), **links}
    body["run"] = await state.runs.read(record.get("runId"), export_ended=record.get("status") not in ACTIVE)
    return JSONResponse(body, headers=NO_STORE)


def _load_export(state: ApiState, campaign_id: str, export_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    record = state.store.get(export_id)
    # Another campaign's export is "not found": its existence is not the caller's business.
    if record is None or record.get("campaignId") != campaign_id:
        raise ApiError(404, "Export not found.", export_id[:100])
    return record, download_links(state, record)


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
