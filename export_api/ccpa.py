"""`DELETE /ccpa/users/{userId}` (SPEC §7): the HTTP side; the deletion itself is export_core/ccpa.py."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api import auth
from export_api.errors import ApiError
from export_api.routes import NO_STORE, api_state, authenticate, to_json
from export_core.ccpa import CcpaDeletion, CcpaDeletionIncomplete

MAX_USER_ID_LENGTH = 256


async def delete_user_exports(request: Request) -> Response:
    """Delete every non-exempt export file containing the user; supreme tokens only; 200 with a summary.
    ---
    summary: CCPA deletion of a user's export files (supreme tokens only)
    operationId: ccpaDeleteUser
    tags: [ccpa]
    security: [{bearerAuth: []}]
    parameters: [{name: userId, in: path, required: true, schema: {type: string}}]
    responses:
      "200":
        description: What was deleted, skipped as exempt, already deleted, in flight.
        content: {application/json: {schema: {$ref: "#/components/schemas/CcpaSummary"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "500":
        description: Some files could not be deleted; `payload` is the summary as a JSON string.
        content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    principal = auth.require_supreme(authenticate(request))
    user_id = request.path_params["userId"]
    if not user_id.strip() or len(user_id) > MAX_USER_ID_LENGTH:
        raise ApiError(400, f"userId must be 1 to {MAX_USER_ID_LENGTH} characters.", user_id[:100])
    state = api_state(request)
    deletion = CcpaDeletion(state.db, state.s3, state.settings.buckets)
    try:
        summary = await run_in_threadpool(deletion.delete_user, user_id, requested_by=principal.user_id)
    except CcpaDeletionIncomplete as exc:
        # The payload is the same summary as a success (as a JSON string): what went and what did not.
        raise ApiError(500, str(exc), json.dumps(to_json(exc.summary))) from None
    return JSONResponse(to_json(summary), headers=NO_STORE)


routes = [
    Route("/ccpa/users/{userId}", delete_user_exports, methods=["DELETE"]),
]
