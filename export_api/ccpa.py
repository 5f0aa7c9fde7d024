"""`DELETE /ccpa/users/{userId}` (SPEC §7): the HTTP side; the deletion itself is export_core/ccpa.py."""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api.errors import ApiError
from export_api.models.base import Error
from export_api.models.ccpa import CcpaSummary
from export_api.routing import ApiRoute, Supreme, error_responses
from export_api.state import NO_STORE, api_state
from export_core.ccpa import CcpaDeletion, CcpaDeletionIncomplete
from export_core.views import to_json

MAX_USER_ID_LENGTH = 256

router = APIRouter(route_class=ApiRoute, tags=["ccpa"])


@router.delete(
    "/ccpa/users/{userId}",
    summary="CCPA deletion of a user's export files (supreme tokens only)",
    operation_id="ccpaDeleteUser",
    response_model=CcpaSummary,
    response_description="What was deleted, skipped as exempt, already deleted, in flight.",
    responses={500: {"model": Error, "description": "Some files could not be deleted; `payload` is the summary."}},
    openapi_extra=error_responses(400, 503),
)
async def delete_user_exports(request: Request, userId: str, principal: Supreme) -> Response:
    """Delete every non-exempt export file containing the user; supreme tokens only; 200 with a summary."""
    if not userId.strip() or len(userId) > MAX_USER_ID_LENGTH:
        raise ApiError(400, f"userId must be 1 to {MAX_USER_ID_LENGTH} characters.", userId[:100])
    state = api_state(request)
    deletion = CcpaDeletion(state.db, state.s3, state.settings.buckets)
    try:
        summary = await run_in_threadpool(deletion.delete_user, userId, requested_by=principal.user_id)
    except CcpaDeletionIncomplete as exc:
        # The payload is the same summary as a success (as a JSON string): what went and what did not.
        raise ApiError(500, str(exc), json.dumps(to_json(exc.summary))) from None
    return JSONResponse(to_json(summary), headers=NO_STORE)
