"""Schedules (SPEC §12): saved export requests that run themselves on a cron, and a run of one now.

REPORT on the campaign, as for its exports and webhooks. The rules (cron, time zone, DST, the
minimum interval) are export_core/schedules.py's, the documents export_core/schedule_store.py's; the
ticks are queued by the Dagster sensor (export_pipelines/schedule_ticks.py), never inside a request.
A 400 names the refused field in `payload`; an id of another campaign is "not found".
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api import observability
from export_api.checks import json_body, parse_date_time, queue_full, refuse_unknown_destinations
from export_api.errors import SCOPE_KEY, ApiError
from export_api.state import ApiState, api_state, authorize_report
from export_core.records import TooManyPending, utcnow
from export_core.schedule_store import OUTCOMES, RUNS_SHOWN, ScheduleStore, TooManySchedules, schedule_view
from export_core.schedules import (
    MAX_CRON_LENGTH,
    MAX_DESTINATIONS,
    MAX_TIMEZONE_LENGTH,
    NEXT_RUNS,
    InvalidSchedule,
    parse_patch,
    parse_schedule,
)
from export_core.views import record_view
from export_core.vocabulary import STATUSES

NOT_FOUND = "Schedule not found."


def _store(request: Request) -> ScheduleStore:
    return ScheduleStore(api_state(request).db)


def _invalid(exc: InvalidSchedule) -> ApiError:
    return ApiError(400, str(exc), exc.field)


def _found(doc: dict[str, Any] | None, schedule_id: str) -> dict[str, Any]:
    if doc is None:
        raise ApiError(404, NOT_FOUND, schedule_id[:100])
    return doc


class CampaignSchedules(HTTPEndpoint):
    """`/campaigns/{campaignId}/schedules`; one endpoint so a 405 lists both methods in `Allow`."""

    async def post(self, request: Request) -> Response:
        """Save a request that runs on a cron; the answer shows its next runs.
        ---
        summary: Create a schedule
        operationId: createSchedule
        tags: [schedules]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ScheduleCreate"}
        responses:
          "201":
            description: The schedule with its next 5 runs.
            content: {application/json: {schema: {$ref: "#/components/schemas/Schedule"}}}
          "400": {$ref: "#/components/responses/ScheduleBadRequest"}
          "409":
            description: The campaign already has MAX_SCHEDULES_PER_CAMPAIGN schedules.
            content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
          "413": {$ref: "#/components/responses/PayloadTooLarge"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        principal = authorize_report(request, campaign_id)
        try:
            schedule = parse_schedule(
                await json_body(request), min_interval_minutes=state.settings.schedule_min_interval_minutes
            )
        except InvalidSchedule as exc:
            raise _invalid(exc) from None

        def create() -> dict[str, Any]:
            state.campaigns.name(campaign_id)  # 400 for a campaign that does not exist
            refuse_unknown_destinations(state.db, campaign_id, schedule.destinations)
            return _store(request).create(
                campaign_id=campaign_id,
                request=schedule,
                created_by=principal.user_id,
                limit=state.settings.max_schedules_per_campaign,
            )

        try:
            created = await run_in_threadpool(create)
        except TooManySchedules as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse(schedule_view(created), 201)

    def get(self, request: Request) -> Response:
        """The campaign's schedules, oldest first, each with its next runs (sync: pymongo).
        ---
        summary: List a campaign's schedules
        operationId: listSchedules
        tags: [schedules]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        responses:
          "200":
            description: Every schedule of the campaign.
            content: {application/json: {schema: {$ref: "#/components/schemas/ScheduleList"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        authorize_report(request, campaign_id)
        state.campaigns.name(campaign_id)
        now = utcnow()
        found = _store(request).for_campaign(campaign_id)
        return JSONResponse({"schedules": [schedule_view(doc, now=now) for doc in found]})


class OneSchedule(HTTPEndpoint):
    """`/campaigns/{campaignId}/schedules/{scheduleId}`: read, change, remove."""

    def get(self, request: Request) -> Response:
        """The schedule, its next runs (after `from`, a preview of any date) and its runs, newest first.
        ---
        summary: Get one schedule with its next runs and its runs
        operationId: getSchedule
        tags: [schedules]
        security: [{bearerAuth: []}]
        parameters:
          - {$ref: "#/components/parameters/campaignId"}
          - {$ref: "#/components/parameters/scheduleId"}
          - name: from
            in: query
            description: >-
              Show the runs after this ISO 8601 date-time (offset or Z; none: UTC) instead of after now.
            schema: {type: string, format: date-time}
            example: "2027-03-13T12:00:00Z"
        responses:
          "200":
            description: The schedule, `nextRuns` (none while paused) and `runs`.
            content: {application/json: {schema: {$ref: "#/components/schemas/ScheduleDetail"}}}
          "400": {$ref: "#/components/responses/ScheduleBadRequest"}
          "404": {$ref: "#/components/responses/ScheduleNotFound"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        campaign_id, schedule_id = request.path_params["campaignId"], request.path_params["scheduleId"]
        authorize_report(request, campaign_id)
        raw_from = request.query_params.get("from")
        after = utcnow() if raw_from is None else parse_date_time(raw_from, "from")
        store = _store(request)
        doc = _found(store.get(campaign_id, schedule_id), schedule_id)
        return JSONResponse({**schedule_view(doc, now=after), "runs": store.runs(schedule_id)})

    async def patch(self, request: Request) -> Response:
        """Change `cron`, `timezone`, `paused`, `skipEmpty` or `destinations`; a resume clears `pausedReason`.
        ---
        summary: Change a schedule (pause, resume, cron, time zone, ...)
        operationId: updateSchedule
        tags: [schedules]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/scheduleId"}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/SchedulePatch"}
        responses:
          "200":
            description: >-
              The schedule as it is now. A resume, or a new cron or time zone, counts ticks from now on:
              the ticks of the time it was paused (or of the old cron) never run.
            content: {application/json: {schema: {$ref: "#/components/schemas/Schedule"}}}
          "400": {$ref: "#/components/responses/ScheduleBadRequest"}
          "404": {$ref: "#/components/responses/ScheduleNotFound"}
          "413": {$ref: "#/components/responses/PayloadTooLarge"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id, schedule_id = request.path_params["campaignId"], request.path_params["scheduleId"]
        authorize_report(request, campaign_id)
        try:
            changes = parse_patch(
                await json_body(request), min_interval_minutes=state.settings.schedule_min_interval_minutes
            )
        except InvalidSchedule as exc:
            raise _invalid(exc) from None

        def update() -> dict[str, Any] | None:
            refuse_unknown_destinations(state.db, campaign_id, changes.get("destinations", []))
            return _store(request).update(campaign_id, schedule_id, changes)

        updated = await run_in_threadpool(update)
        return JSONResponse(schedule_view(_found(updated, schedule_id)))

    def delete(self, request: Request) -> Response:
        """Remove the schedule: no further runs; the exports it made stay (sync: pymongo).
        ---
        summary: Remove a schedule
        operationId: deleteSchedule
        tags: [schedules]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/scheduleId"}]
        responses:
          "204":
            description: Removed; its exports and their files stay.
          "404": {$ref: "#/components/responses/ScheduleNotFound"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        campaign_id, schedule_id = request.path_params["campaignId"], request.path_params["scheduleId"]
        authorize_report(request, campaign_id)
        if not _store(request).delete(campaign_id, schedule_id):
            raise ApiError(404, NOT_FOUND, schedule_id[:100])
        return Response(status_code=204)


async def run_schedule(request: Request) -> Response:
    """Queue a run of the schedule now, outside its cron (also while it is paused).
    ---
    summary: Run a schedule now
    operationId: runSchedule
    tags: [schedules]
    security: [{bearerAuth: []}]
    parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/scheduleId"}]
    responses:
      "202":
        description: >-
          The PENDING export record it queued, with `schedule` {id, scheduledFor (now), manual: true}; the
          pending-exports sensor launches it in its turn, as for an export POST.
        content: {application/json: {schema: {$ref: "#/components/schemas/ExportRecord"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {$ref: "#/components/responses/ScheduleNotFound"}
      "429": {$ref: "#/components/responses/TooManyRequests"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    state = api_state(request)
    campaign_id, schedule_id = request.path_params["campaignId"], request.path_params["scheduleId"]
    principal = authorize_report(request, campaign_id)
    request_id = request.scope.get(SCOPE_KEY)
    try:
        record = await run_in_threadpool(_queue_run, state, campaign_id, schedule_id, principal.user_id, request_id)
    except TooManyPending as exc:
        raise queue_full(exc) from None
    observability.set_export_id(str(record["id"]))
    return JSONResponse(record_view(record), 202)


def _queue_run(
    state: ApiState, campaign_id: str, schedule_id: str, user_id: str, request_id: str | None
) -> dict[str, Any]:
    store = ScheduleStore(state.db)
    schedule = _found(store.get(campaign_id, schedule_id), schedule_id)
    result = store.queue_run(
        schedule,
        utcnow(),
        campaign_name=state.campaigns.name(campaign_id),
        manual=True,
        requested_by=user_id,
        request_id=request_id,
        max_pending=state.settings.max_pending_per_campaign,
    )
    return result.record


def component_schemas(export_request_variants: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI schemas of these operations; `export_request_variants` are the request's (type, dateKey,
    format, incremental) combinations with the schedule's own fields (export_api/openapi.py)."""
    date_time = {"type": "string", "format": "date-time"}
    fields = schedule_fields()
    schedule_properties = {
        "id": {"type": "string"},
        "campaignId": {"type": "string"},
        "exportType": {"type": "string"},
        "format": {"type": "string"},
        "dateKey": {"type": "string"},
        "includeAllMarkets": {"type": "boolean"},
        **{name: fields[name] for name in ("cron", "timezone", "incremental", "skipEmpty", "destinations", "paused")},
        "pausedReason": {
            "type": "string",
            "nullable": True,
            "description": "Why it is paused: by a user, or after SCHEDULE_PAUSE_AFTER_FAILURES failed runs in a row.",
        },
        "pausedAt": date_time,
        "createdBy": {"type": "string", "description": "The `sub` of the token that created it."},
        "createdAt": date_time,
        "updatedAt": date_time,
        "nextRuns": {
            "type": "array",
            "maxItems": NEXT_RUNS,
            "description": f"The next {NEXT_RUNS} runs (none while paused), exactly as they will happen across DST.",
            "items": {"$ref": "#/components/schemas/NextRun"},
        },
    }
    required = [
        "id", "campaignId", "exportType", "format", "cron", "timezone", "incremental", "skipEmpty", "destinations",
        "paused", "createdBy", "createdAt", "nextRuns",
    ]  # fmt: skip
    return {
        "ScheduleCreate": {
            "description": "A saved export request (as for POST .../exports; `incremental` only for the types"
            " that offer it) and when it runs.",
            "oneOf": export_request_variants,
        },
        "SchedulePatch": {
            "type": "object",
            "additionalProperties": False,
            "description": "The fields to change; the others stay.",
            "properties": {name: fields[name] for name in ("cron", "timezone", "paused", "skipEmpty", "destinations")},
            "example": {"paused": False},
        },
        "NextRun": {
            "type": "object",
            "required": ["at", "local"],
            "additionalProperties": False,
            "properties": {
                "at": {**date_time, "description": "UTC, e.g. 2027-03-14T07:00:00Z."},
                "local": {**date_time, "description": "The same instant in the schedule's time zone, with offset."},
            },
        },
        "ScheduleRun": {
            "type": "object",
            "description": "One tick: its export record, or `missed` (the stack was down; a later tick caught up).",
            "required": ["scheduledFor", "exportId", "status", "count", "outcome"],
            "properties": {
                "scheduledFor": date_time,
                "exportId": {"type": "string", "nullable": True},
                "status": {"type": "string", "nullable": True, "enum": [*STATUSES, None]},
                "count": {"type": "integer", "nullable": True},
                "window": {"description": "What the run covers (incremental runs)."},
                "outcome": {"type": "string", "enum": list(OUTCOMES)},
                "manual": {"type": "boolean", "description": "Asked for through POST .../run."},
            },
        },
        "Schedule": {
            "type": "object",
            "required": required,
            "additionalProperties": False,
            "properties": schedule_properties,
        },
        "ScheduleDetail": {
            "type": "object",
            "required": [*required, "runs"],
            "additionalProperties": False,
            "properties": {
                **schedule_properties,
                "runs": {
                    "type": "array",
                    "maxItems": RUNS_SHOWN,
                    "description": f"The last {RUNS_SHOWN} runs, newest first.",
                    "items": {"$ref": "#/components/schemas/ScheduleRun"},
                },
            },
        },
        "ScheduleList": {
            "type": "object",
            "required": ["schedules"],
            "additionalProperties": False,
            "properties": {"schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}},
        },
    }


def schedule_fields() -> dict[str, dict[str, Any]]:
    """The schemas of a schedule's own fields (beyond the export request's), as POST and PATCH take them."""
    return {
        "cron": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CRON_LENGTH,
            "description": "Five fields (minute hour day-of-month month day-of-week), on the wall clock of"
            " `timezone`; runs at most every SCHEDULE_MIN_INTERVAL_MINUTES.",
            "example": "0 6 * * *",
        },
        "timezone": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TIMEZONE_LENGTH,
            "default": "UTC",
            "description": "An IANA time zone name.",
            "example": "America/New_York",
        },
        "incremental": {
            "type": "boolean",
            "default": False,
            "description": "Send only the rows earlier successful runs have not sent.",
        },
        "skipEmpty": {
            "type": "boolean",
            "description": "A run without new rows ends FINISHED with count 0 and no file (default: incremental).",
        },
        "destinations": {
            "type": "array",
            "maxItems": MAX_DESTINATIONS,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "description": "Ids of the campaign's destinations the files are pushed to.",
        },
        "paused": {"type": "boolean", "default": False},
    }


routes = [
    Route("/campaigns/{campaignId}/schedules", CampaignSchedules),
    Route("/campaigns/{campaignId}/schedules/{scheduleId}", OneSchedule),
    Route("/campaigns/{campaignId}/schedules/{scheduleId}/run", run_schedule, methods=["POST"]),
]
