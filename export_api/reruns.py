"""`POST /campaigns/{campaignId}/exports/{exportId}/rerun` (SPEC §4): a FAILED or EXPIRED export again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api import dagster_launch, observability
from export_api.errors import ApiError
from export_api.models.records import ExportRecord
from export_api.routing import ApiRoute, CampaignId, Report, error_responses
from export_api.state import ApiState, api_state
from export_core.export_types import EXPORT_TYPES
from export_core.views import record_view

RERUN_RETRY_AFTER_SECONDS = 5  # a re-run refused for a moment (engine unreachable, last run ending)

router = APIRouter(route_class=ApiRoute, tags=["exports"])


@router.post(
    "/campaigns/{campaignId}/exports/{exportId}/rerun",
    summary="Re-run a failed or expired export",
    operation_id="rerunExport",
    status_code=202,
    response_model=ExportRecord,
    response_description="The record, TRIGGERED, with the `runId` of its new Dagster run (a re-execution of its"
    " last run, or a fresh run when Dagster has none), which waits its turn in the one-at-a-time queue.",
    openapi_extra=error_responses(409, 503),
)
async def rerun_export(request: Request, campaignId: CampaignId, exportId: str, principal: Report) -> Response:
    """Re-run a FAILED or EXPIRED export (SPEC §4): it is TRIGGERED at once and its run is queued."""
    state = api_state(request)
    # Claimed first (FAILED/EXPIRED → TRIGGERED in one conditional update): of identical
    # concurrent calls one wins and launches; the others find it TRIGGERED and get 409.
    claim, before = await run_in_threadpool(_claim_rerun, state, campaignId, exportId, principal.user_id)
    observability.set_export_id(exportId)
    try:
        run_id = await dagster_launch.launch_rerun(state.http, state.settings.dagster_graphql_url, before)
    except BaseException as exc:
        # Not launched: the record goes back to what it was, whatever stopped the launch.
        await run_in_threadpool(state.store.release_rerun, exportId, claim=claim, before=before)
        retry_after = {"Retry-After": str(RERUN_RETRY_AFTER_SECONDS)}
        if isinstance(exc, dagster_launch.PreviousRunActive):
            raise ApiError(
                409, "This export's last run is still ending; please try again in a moment.", headers=retry_after
            ) from None
        if isinstance(exc, dagster_launch.LaunchFailed):
            raise ApiError(
                503,
                "The export engine is unreachable right now, so the export was not re-run; please try again in a"
                " moment.",
                headers=retry_after,
            ) from None
        raise
    record = await run_in_threadpool(_rerun_launched, state, exportId, claim, run_id)
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
