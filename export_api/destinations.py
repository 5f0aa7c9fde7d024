"""Destinations (SPEC §13): where a campaign's finished files are pushed, a test of one, and an export's deliveries.

REPORT on the campaign, as for its exports, webhooks and schedules. Secrets (an SFTP password, the private key
of a generated pair) are write-only: no answer, log line or error carries them; the 201 of a `generateKey`
destination carries the public key for the partner to authorize (it stays in GET: it is public). A 400 names
the refused field in `payload`; an id of another campaign is "not found". Deliveries are made by the Dagster
sensor (export_pipelines/destination_delivery.py), never inside a request; the test endpoint connects from
the request itself (bounded by the transports' timeouts).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api import observability
from export_api.checks import load_export
from export_api.errors import ApiError
from export_api.models.base import Error
from export_api.models.destinations import (
    DeliveryList,
    Destination,
    DestinationList,
    DestinationRequest,
    DestinationTest,
)
from export_api.routing import ApiRoute, CampaignId, Report, error_responses
from export_api.state import NO_STORE, api_state
from export_core import destination_delivery
from export_core.destination_store import (
    MAX_PER_CAMPAIGN,
    DestinationInvalid,
    DestinationStore,
    TooManyDestinations,
    check_host,
    check_pgp_key,
    destination_view,
)
from export_core.destinations import DeliveryError
from export_core.secrets import UnreadableSecret

NOT_FOUND = "Destination not found."
DESTINATIONS = "/campaigns/{campaignId}/destinations"
ONE = DESTINATIONS + "/{destinationId}"
BAD_REQUEST_RESPONSE: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Error,
        "description": "A field the service refuses (`payload` names it: e.g. `hostKey` that is not a host key,"
        " `pgpPublicKey` that has expired, `host` that resolves to a private address), campaign not found, or a"
        " malformed body.",
    }
}
NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No such destination in this campaign (also: another campaign's destination)."}
}

router = APIRouter(route_class=ApiRoute, tags=["destinations"])


def _store(request: Request) -> DestinationStore:
    return DestinationStore(api_state(request).db)


def _found(doc: dict[str, Any] | None, destination_id: str) -> dict[str, Any]:
    if doc is None:
        raise ApiError(404, NOT_FOUND, destination_id[:100])
    return doc


@router.post(
    DESTINATIONS,
    summary="Add a destination (SFTP, S3 or Marketing Cloud)",
    operation_id="createDestination",
    status_code=201,
    response_model=Destination,
    response_description="The destination, without its password or private key (never shown); `publicKey`"
    " (OpenSSH) when the service generated the key pair.",
    responses={
        **BAD_REQUEST_RESPONSE,
        409: {"model": Error, "description": f"The campaign already has {MAX_PER_CAMPAIGN} destinations."},
    },
    openapi_extra=error_responses(413, 503),
)
async def create_destination(
    request: Request, campaignId: CampaignId, principal: Report, body: DestinationRequest
) -> Response:
    """Add a destination; for `generateKey: true` the answer carries the public key to authorize."""
    state = api_state(request)

    def create() -> dict[str, Any]:
        # gpg (a pgpPublicKey), DNS (the host) and pymongo block: off the event loop.
        destination = check_pgp_key(body.checked)
        check_host(destination, allow_private=state.settings.webhook_allow_private)
        state.campaigns.name(campaignId)  # 400 for a campaign that does not exist
        return _store(request).create(
            campaign_id=campaignId, request=destination, created_by=principal.user_id, secret_box=state.secret_box
        )

    try:
        created = await run_in_threadpool(create)
    except DestinationInvalid as exc:
        raise ApiError(400, str(exc), exc.field) from None
    except TooManyDestinations as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(destination_view(created), 201, headers=NO_STORE)


@router.get(
    DESTINATIONS,
    summary="List a campaign's destinations",
    operation_id="listDestinations",
    response_model=DestinationList,
    response_description=f"Every destination of the campaign (at most {MAX_PER_CAMPAIGN}); never a password or"
    " private key.",
    openapi_extra=error_responses(400, 503),
)
def list_destinations(request: Request, campaignId: CampaignId, principal: Report) -> Response:
    """The campaign's destinations, oldest first, without their secrets (sync: pymongo)."""
    api_state(request).campaigns.name(campaignId)
    found = _store(request).for_campaign(campaignId)
    return JSONResponse({"destinations": [destination_view(doc) for doc in found]})


@router.get(
    ONE,
    summary="Get one destination",
    operation_id="getDestination",
    response_model=Destination,
    response_description="The destination; never a password or private key.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(503),
)
def get_destination(request: Request, campaignId: CampaignId, destinationId: str, principal: Report) -> Response:
    """One destination, without its secrets (sync: pymongo)."""
    return JSONResponse(destination_view(_found(_store(request).get(campaignId, destinationId), destinationId)))


@router.delete(
    ONE,
    summary="Remove a destination",
    operation_id="deleteDestination",
    status_code=204,
    response_class=Response,
    response_description="Removed with its secrets; the campaign's schedules no longer name it, and a delivery to"
    " it that is still pending ends failed.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(503),
)
def delete_destination(request: Request, campaignId: CampaignId, destinationId: str, principal: Report) -> Response:
    """Remove the destination; the campaign's schedules stop naming it (sync: pymongo)."""
    if not _store(request).delete(campaignId, destinationId):
        raise ApiError(404, NOT_FOUND, destinationId[:100])
    return Response(status_code=204)


@router.post(
    ONE + "/test",
    summary="Test a destination",
    operation_id="testDestination",
    response_model=DestinationTest,
    response_description="`ok` true with what was checked, or false with what failed (one sentence: host key,"
    " login, folder, permission, address); nothing else is left on the destination.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(503),
)
async def check_destination(
    request: Request, campaignId: CampaignId, destinationId: str, principal: Report
) -> Response:
    """Connect to the destination (address rules, pinned host key, login or role), write and remove a small file."""
    state = api_state(request)

    def check() -> dict[str, Any]:
        store = _store(request)
        destination = _found(store.get(campaignId, destinationId), destinationId)
        reach = destination_delivery.Reach.of(state.settings)
        try:
            secrets = store.login_secrets(destinationId, state.secret_box)
            message = destination_delivery.check(destination, secrets, reach)
        except (DeliveryError, ValueError, UnreadableSecret) as exc:
            return {"ok": False, "message": str(exc)}
        return {"ok": True, "message": message}

    return JSONResponse(await run_in_threadpool(check), headers=NO_STORE)


@router.get(
    "/campaigns/{campaignId}/exports/{exportId}/deliveries",
    summary="List an export's deliveries to its destinations",
    operation_id="listExportDeliveries",
    response_model=DeliveryList,
    response_description="Stored when the export FINISHED (none before, none for a run skipped empty), in the"
    " order of its destinations; attempts newest first.",
    openapi_extra=error_responses(404, 503),
)
def list_export_deliveries(request: Request, campaignId: CampaignId, exportId: str, principal: Report) -> Response:
    """An export's deliveries, one per destination it named, each with its attempts (sync: pymongo)."""
    record, _ = load_export(api_state(request), campaignId, exportId)
    observability.set_export_id(str(record["_id"]))
    return JSONResponse({"deliveries": _store(request).deliveries(record)})
