"""Schedules (SPEC §12): saved export requests that run themselves on a cron, and a run of one now.

REPORT on the campaign, as for its exports and webhooks. The rules (cron, time zone, DST, the
minimum interval) are export_core/schedules.py's, the documents export_core/schedule_store.py's; the
ticks are queued by the Dagster sensor (export_pipelines/schedule_ticks.py), never inside a request.
A 400 names the refused field in `payload`; an id of another campaign is "not found".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api import observability
from export_api.checks import queue_full, refuse_unknown_destinations
from export_api.errors import SCOPE_KEY, ApiError
from export_api.models.base import Error
from export_api.models.records import ExportRecord
from export_api.models.schedules import (
    Schedule,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleList,
    SchedulePatch,
    ScheduleQuery,
    schedule_rules,
)
from export_api.routing import ApiRoute, CampaignId, Report, error_responses
from export_api.state import ApiState, api_state
from export_core.records import TooManyPending, utcnow
from export_core.schedule_store import ScheduleStore, TooManySchedules, schedule_view
from export_core.views import record_view

NOT_FOUND = "Schedule not found."
SCHEDULES = "/campaigns/{campaignId}/schedules"
ONE = SCHEDULES + "/{scheduleId}"
NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No such schedule in this campaign (also: another campaign's schedule)."}
}
BAD_REQUEST = (
    "A cron, time zone, type/format/incremental combination or field the service refuses (`payload` names the"
    " field: e.g. `cron` for a cron that runs more often than SCHEDULE_MIN_INTERVAL_MINUTES, `from` for a"
    " preview date that does not parse), campaign not found, or a malformed body."
)
BAD_REQUEST_RESPONSE: dict[int | str, dict[str, Any]] = {400: {"model": Error, "description": BAD_REQUEST}}

router = APIRouter(route_class=ApiRoute, tags=["schedules"])


def _found(doc: dict[str, Any] | None, schedule_id: str) -> dict[str, Any]:
    if doc is None:
        raise ApiError(404, NOT_FOUND, schedule_id[:100])
    return doc


@router.post(
    SCHEDULES,
    summary="Create a schedule",
    operation_id="createSchedule",
    status_code=201,
    response_model=Schedule,
    response_description="The schedule with its next 5 runs.",
    dependencies=[Depends(schedule_rules)],
    responses={
        **BAD_REQUEST_RESPONSE,
        409: {"model": Error, "description": "The campaign already has MAX_SCHEDULES_PER_CAMPAIGN schedules."},
    },
    openapi_extra=error_responses(413, 503),
)
async def create_schedule(
    request: Request, campaignId: CampaignId, principal: Report, body: ScheduleCreate
) -> Response:
    """Save a request that runs on a cron; the answer shows its next runs."""
    state = api_state(request)
    schedule = body.schedule_request()

    def create() -> dict[str, Any]:
        state.campaigns.name(campaignId)  # 400 for a campaign that does not exist
        refuse_unknown_destinations(state.db, campaignId, schedule.destinations)
        return ScheduleStore(state.db).create(
            campaign_id=campaignId,
            request=schedule,
            created_by=principal.user_id,
            limit=state.settings.max_schedules_per_campaign,
        )

    try:
        created = await run_in_threadpool(create)
    except TooManySchedules as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(schedule_view(created), 201)


@router.get(
    SCHEDULES,
    summary="List a campaign's schedules",
    operation_id="listSchedules",
    response_model=ScheduleList,
    response_description="Every schedule of the campaign.",
    openapi_extra=error_responses(400, 503),
)
def list_schedules(request: Request, campaignId: CampaignId, principal: Report) -> Response:
    """The campaign's schedules, oldest first, each with its next runs (sync: pymongo)."""
    state = api_state(request)
    state.campaigns.name(campaignId)
    now = utcnow()
    found = ScheduleStore(state.db).for_campaign(campaignId)
    return JSONResponse({"schedules": [schedule_view(doc, now=now) for doc in found]})


@router.get(
    ONE,
    summary="Get one schedule with its next runs and its runs",
    operation_id="getSchedule",
    response_model=ScheduleDetail,
    response_description="The schedule, `nextRuns` (none while paused) and `runs`.",
    responses={**BAD_REQUEST_RESPONSE, **NOT_FOUND_RESPONSE},
    openapi_extra=error_responses(503),
)
def get_schedule(
    request: Request,
    campaignId: CampaignId,
    scheduleId: str,
    principal: Report,
    query: Annotated[ScheduleQuery, Query()],
) -> Response:
    """The schedule, its next runs (after `from`, a preview of any date) and its runs, newest first."""
    after = utcnow() if query.from_ is None else query.from_
    store = ScheduleStore(api_state(request).db)
    doc = _found(store.get(campaignId, scheduleId), scheduleId)
    return JSONResponse({**schedule_view(doc, now=after), "runs": store.runs(scheduleId)})


@router.patch(
    ONE,
    summary="Change a schedule (pause, resume, cron, time zone, ...)",
    operation_id="updateSchedule",
    response_model=Schedule,
    response_description="The schedule as it is now. A resume, or a new cron or time zone, counts ticks from now on:"
    " the ticks of the time it was paused (or of the old cron) never run.",
    dependencies=[Depends(schedule_rules)],
    responses={**BAD_REQUEST_RESPONSE, **NOT_FOUND_RESPONSE},
    openapi_extra=error_responses(413, 503),
)
async def update_schedule(
    request: Request, campaignId: CampaignId, scheduleId: str, principal: Report, body: SchedulePatch
) -> Response:
    """Change `cron`, `timezone`, `paused`, `skipEmpty` or `destinations`; a resume clears `pausedReason`."""
    state = api_state(request)
    changes = body.changes()

    def update() -> dict[str, Any] | None:
        refuse_unknown_destinations(state.db, campaignId, changes.get("destinations", []))
        return ScheduleStore(state.db).update(campaignId, scheduleId, changes)

    updated = await run_in_threadpool(update)
    return JSONResponse(schedule_view(_found(updated, scheduleId)))


@router.delete(
    ONE,
    summary="Remove a schedule",
    operation_id="deleteSchedule",
    status_code=204,
    response_class=Response,
    response_description="Removed; its exports and their files stay.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(503),
)
def delete_schedule(request: Request, campaignId: CampaignId, scheduleId: str, principal: Report) -> Response:
    """Remove the schedule: no further runs; the exports it made stay (sync: pymongo)."""
    if not ScheduleStore(api_state(request).db).delete(campaignId, scheduleId):
        raise ApiError(404, NOT_FOUND, scheduleId[:100])
    return Response(status_code=204)


@router.post(
    ONE + "/run",
    summary="Run a schedule now",
    operation_id="runSchedule",
    status_code=202,
    response_model=ExportRecord,
    response_description="The PENDING export record it queued, with `schedule` {id, scheduledFor (now), manual:"
    " true}; the pending-exports sensor launches it in its turn, as for an export POST.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(400, 429, 503),
)
async def run_schedule(request: Request, campaignId: CampaignId, scheduleId: str, principal: Report) -> Response:
    """Queue a run of the schedule now, outside its cron (also while it is paused)."""
    state = api_state(request)
    request_id = request.scope.get(SCOPE_KEY)
    try:
        record = await run_in_threadpool(_queue_run, state, campaignId, scheduleId, principal.user_id, request_id)
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
