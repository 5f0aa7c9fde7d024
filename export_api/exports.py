"""`/campaigns/{campaignId}/exports` (SPEC §6): request an export, list a campaign's, read one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api import observability
from export_api.checks import load_export, queue_full, refuse_unknown_destinations
from export_api.errors import SCOPE_KEY
from export_api.models.exports import ExportListQuery, ExportRequest
from export_api.models.records import ExportDetail, ExportList, ExportRecord
from export_api.routing import ApiRoute, CampaignId, Report, error_responses
from export_api.state import NO_STORE, ApiState, api_state
from export_core import export_types
from export_core.records import ACTIVE, CreateResult, RequestOptions, TooManyPending
from export_core.views import record_view

router = APIRouter(route_class=ApiRoute, tags=["exports"])
EXPORTS = "/campaigns/{campaignId}/exports"


@router.post(
    EXPORTS,
    summary="Request an export",
    operation_id="createExport",
    status_code=201,
    response_model=ExportRecord,
    response_description="A new PENDING export.",
    responses={200: {"model": ExportRecord, "description": "The identical PENDING/TRIGGERED export (none is queued)."}},
    openapi_extra=error_responses(400, 413, 429, 503),
)
async def create_export(request: Request, campaignId: CampaignId, principal: Report, body: ExportRequest) -> Response:
    """Queue an export; an identical PENDING/TRIGGERED one (type, dateKey, format) is returned instead (200)."""
    state = api_state(request)
    request_id = request.scope.get(SCOPE_KEY)
    try:
        result = await run_in_threadpool(
            _create, state, campaignId, body.export_request(), principal.user_id, request_id, body.options()
        )
    except TooManyPending as exc:
        raise queue_full(exc) from None
    observability.set_export_id(str(result.record["id"]))
    return JSONResponse(record_view(result.record), 201 if result.created else 200)


def _create(
    state: ApiState,
    campaign_id: str,
    request: export_types.ExportRequest,
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


@router.get(
    EXPORTS,
    summary="List a campaign's exports",
    operation_id="listExports",
    response_model=ExportList,
    response_description="One page of records.",
    openapi_extra=error_responses(400, 503),
)
def list_exports(
    request: Request, campaignId: CampaignId, principal: Report, query: Annotated[ExportListQuery, Query()]
) -> Response:
    """A page of the campaign's records, newest first unless asked otherwise (sync: pymongo)."""
    state = api_state(request)
    state.campaigns.name(campaignId)
    records, total = state.store.list_page(
        campaignId,
        export_type=query.exportType,
        page=query.page,
        limit=query.limit,
        sort=query.sort,
        sort_order=query.sortOrder,
    )
    exports = [record_view(r) for r in records]
    return JSONResponse({"exports": exports, "page": query.page, "limit": query.limit, "total": total})


@router.get(
    EXPORTS + "/{exportId}",
    summary="Get one export",
    operation_id="getExport",
    response_model=ExportDetail,
    response_description="The record; `path`/`paths` when FINISHED; `run` from Dagster.",
    openapi_extra=error_responses(404, 503),
)
async def get_export(request: Request, campaignId: CampaignId, exportId: str, principal: Report) -> Response:
    """One record, its download link(s) when finished, and its Dagster run's status."""
    state = api_state(request)
    record, links = await run_in_threadpool(load_export, state, campaignId, exportId)
    observability.set_export_id(str(record["_id"]))
    body = {**record_view(record), **links}
    body["run"] = await state.runs.read(record.get("runId"), export_ended=record.get("status") not in ACTIVE)
    return JSONResponse(body, headers=NO_STORE)
