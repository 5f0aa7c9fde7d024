"""Webhook subscriptions (SPEC §6, §11): subscribe, list, unsubscribe, and read a subscription's deliveries.

REPORT on the campaign, as for its exports. The signing secret is stored encrypted (SECRETS_KEY) and
is in the 201 answer only; lists never carry it, and no log line or error names it (or the URL, which
may carry tokens of its own).
A campaign has at most 10 subscriptions; one more is a 409 (a conflict with the campaign's state,
not a malformed request). Deliveries are made by the Dagster sensor (export_pipelines/webhook_delivery.py),
never inside a request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from export_api.errors import ApiError
from export_api.models.base import Error, PageQuery
from export_api.models.webhooks import WebhookCreated, WebhookDeliveryList, WebhookList, WebhookRequest
from export_api.routing import ApiRoute, CampaignId, Report, error_responses
from export_api.state import NO_STORE, api_state
from export_core import webhooks

NOT_FOUND = "Webhook not found."
HOOKS = "/campaigns/{campaignId}/webhooks"
HOOK = HOOKS + "/{webhookId}"
NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No such webhook in this campaign (also: another campaign's webhook)."}
}

router = APIRouter(route_class=ApiRoute, tags=["webhooks"])


def _store(request: Request) -> webhooks.WebhookStore:
    return webhooks.WebhookStore(api_state(request).db)


@router.post(
    HOOKS,
    summary="Subscribe to a campaign's export events",
    operation_id="createWebhook",
    status_code=201,
    response_model=WebhookCreated,
    response_description="The subscription with its `secret` (`whsec_…`), which is never shown again.",
    responses={409: {"model": Error, "description": "The campaign already has 10 webhooks."}},
    openapi_extra=error_responses(400, 413, 503),
)
async def create_webhook(request: Request, campaignId: CampaignId, principal: Report, body: WebhookRequest) -> Response:
    """Subscribe a URL to export events; the answer carries the signing secret, this once."""
    allow_private = api_state(request).settings.webhook_allow_private
    try:
        # Name resolution blocks: off the event loop, like every pymongo call.
        await run_in_threadpool(webhooks.check_url, body.url, allow_private=allow_private)
        created = await run_in_threadpool(_create, request, campaignId, body, principal.user_id)
    except webhooks.InvalidWebhook as exc:
        raise ApiError(400, str(exc)) from None
    except webhooks.TooManyWebhooks as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(webhooks.subscription_view(created, secret=True), 201, headers=NO_STORE)


def _create(request: Request, campaign_id: str, body: WebhookRequest, user_id: str) -> dict[str, Any]:
    state = api_state(request)
    state.campaigns.name(campaign_id)  # 400 for a campaign that does not exist
    return _store(request).create(
        campaign_id=campaign_id, url=body.url, events=body.events, created_by=user_id, secret_box=state.secret_box
    )


@router.get(
    HOOKS,
    summary="List a campaign's webhooks",
    operation_id="listWebhooks",
    response_model=WebhookList,
    response_description="Every subscription of the campaign (at most 10); never a secret.",
    openapi_extra=error_responses(400, 503),
)
def list_webhooks(request: Request, campaignId: CampaignId, principal: Report) -> Response:
    """The campaign's subscriptions, oldest first, without their secrets (sync: pymongo)."""
    api_state(request).campaigns.name(campaignId)
    found = _store(request).for_campaign(campaignId)
    return JSONResponse({"webhooks": [webhooks.subscription_view(doc) for doc in found]})


@router.delete(
    HOOK,
    summary="Remove a webhook",
    operation_id="deleteWebhook",
    status_code=204,
    response_class=Response,
    response_description="Removed; no delivery is attempted for it any more.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(503),
)
def delete_webhook(request: Request, campaignId: CampaignId, webhookId: str, principal: Report) -> Response:
    """Unsubscribe: the subscription and its pending deliveries go (sync: pymongo)."""
    if not _store(request).delete(campaignId, webhookId):
        raise ApiError(404, NOT_FOUND, webhookId[:100])
    return Response(status_code=204)


@router.get(
    HOOK + "/deliveries",
    summary="List a webhook's deliveries and their attempts",
    operation_id="listWebhookDeliveries",
    response_model=WebhookDeliveryList,
    response_description="One page of deliveries, newest first; attempts newest first within each.",
    responses=NOT_FOUND_RESPONSE,
    openapi_extra=error_responses(400, 503),
)
def list_deliveries(
    request: Request, campaignId: CampaignId, webhookId: str, principal: Report, query: Annotated[PageQuery, Query()]
) -> Response:
    """A subscription's deliveries, newest first, each with its attempts (sync: pymongo)."""
    store = _store(request)
    if store.get(campaignId, webhookId) is None:
        raise ApiError(404, NOT_FOUND, webhookId[:100])
    found = store.list_deliveries(webhookId, page=query.page, limit=query.limit)
    deliveries = [webhooks.delivery_view(d) for d in found]
    return JSONResponse({"deliveries": deliveries, "page": query.page, "limit": query.limit})
