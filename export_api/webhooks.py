"""Webhook subscriptions (SPEC §6, §11): subscribe, list, unsubscribe, and read a subscription's deliveries.

REPORT on the campaign, as for its exports. The signing secret is stored encrypted (SECRETS_KEY) and
is in the 201 answer only; lists never carry it, and no log line or error names it (or the URL, which
may carry tokens of its own).
A campaign has at most 10 subscriptions; one more is a 409 (a conflict with the campaign's state,
not a malformed request). Deliveries are made by the Dagster sensor (export_pipelines/webhook_delivery.py),
never inside a request.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api.checks import _int_param, json_body
from export_api.errors import ApiError
from export_api.models.base import MAX_LIMIT, MAX_PAGE, parse_body
from export_api.models.webhooks import WebhookRequest
from export_api.state import NO_STORE, api_state, authorize_report
from export_core import outbox, webhooks

NOT_FOUND = "Webhook not found."


def _store(request: Request) -> webhooks.WebhookStore:
    return webhooks.WebhookStore(api_state(request).db)


class CampaignWebhooks(HTTPEndpoint):
    """`/campaigns/{campaignId}/webhooks`; one endpoint so a 405 lists both methods in `Allow`."""

    async def post(self, request: Request) -> Response:
        """Subscribe a URL to export events; the answer carries the signing secret, this once.
        ---
        summary: Subscribe to a campaign's export events
        operationId: createWebhook
        tags: [webhooks]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/WebhookRequest"}
        responses:
          "201":
            description: The subscription with its `secret` (`whsec_…`), which is never shown again.
            content: {application/json: {schema: {$ref: "#/components/schemas/WebhookCreated"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "409":
            description: The campaign already has 10 webhooks.
            content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
          "413": {$ref: "#/components/responses/PayloadTooLarge"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        principal = authorize_report(request, campaign_id)
        body = parse_body(WebhookRequest, await json_body(request))
        url, events = body.url, body.events
        allow_private = state.settings.webhook_allow_private
        try:
            # Name resolution blocks: off the event loop, like every pymongo call.
            await run_in_threadpool(webhooks.check_url, url, allow_private=allow_private)
            created = await run_in_threadpool(_create, request, campaign_id, url, events, principal.user_id)
        except webhooks.InvalidWebhook as exc:
            raise ApiError(400, str(exc)) from None
        except webhooks.TooManyWebhooks as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse(webhooks.subscription_view(created, secret=True), 201, headers=NO_STORE)

    def get(self, request: Request) -> Response:
        """The campaign's subscriptions, oldest first, without their secrets (sync: pymongo).
        ---
        summary: List a campaign's webhooks
        operationId: listWebhooks
        tags: [webhooks]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        responses:
          "200":
            description: Every subscription of the campaign (at most 10); never a secret.
            content: {application/json: {schema: {$ref: "#/components/schemas/WebhookList"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        authorize_report(request, campaign_id)
        state.campaigns.name(campaign_id)
        found = _store(request).for_campaign(campaign_id)
        return JSONResponse({"webhooks": [webhooks.subscription_view(doc) for doc in found]})


def _create(request: Request, campaign_id: str, url: str, events: list[str], user_id: str) -> dict[str, Any]:
    api_state(request).campaigns.name(campaign_id)  # 400 for a campaign that does not exist
    state = api_state(request)
    return _store(request).create(
        campaign_id=campaign_id, url=url, events=events, created_by=user_id, secret_box=state.secret_box
    )


def delete_webhook(request: Request) -> Response:
    """Unsubscribe: the subscription and its pending deliveries go (sync: pymongo).
    ---
    summary: Remove a webhook
    operationId: deleteWebhook
    tags: [webhooks]
    security: [{bearerAuth: []}]
    parameters:
      - {$ref: "#/components/parameters/campaignId"}
      - {name: webhookId, in: path, required: true, schema: {type: string}}
    responses:
      "204":
        description: Removed; no delivery is attempted for it any more.
      "404":
        description: "No such webhook in this campaign (also: another campaign's webhook)."
        content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    campaign_id, webhook_id = request.path_params["campaignId"], request.path_params["webhookId"]
    authorize_report(request, campaign_id)
    if not _store(request).delete(campaign_id, webhook_id):
        raise ApiError(404, NOT_FOUND, webhook_id[:100])
    return Response(status_code=204)


def list_deliveries(request: Request) -> Response:
    """A subscription's deliveries, newest first, each with its attempts (sync: pymongo).
    ---
    summary: List a webhook's deliveries and their attempts
    operationId: listWebhookDeliveries
    tags: [webhooks]
    security: [{bearerAuth: []}]
    parameters:
      - {$ref: "#/components/parameters/campaignId"}
      - {name: webhookId, in: path, required: true, schema: {type: string}}
      - {$ref: "#/components/parameters/page"}
      - {$ref: "#/components/parameters/limit"}
    responses:
      "200":
        description: One page of deliveries, newest first; attempts newest first within each.
        content: {application/json: {schema: {$ref: "#/components/schemas/WebhookDeliveryList"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404":
        description: "No such webhook in this campaign (also: another campaign's webhook)."
        content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    campaign_id, webhook_id = request.path_params["campaignId"], request.path_params["webhookId"]
    authorize_report(request, campaign_id)
    page = _int_param(request.query_params, "page", 0, 0, MAX_PAGE)
    limit = _int_param(request.query_params, "limit", 20, 1, MAX_LIMIT)
    store = _store(request)
    if store.get(campaign_id, webhook_id) is None:
        raise ApiError(404, NOT_FOUND, webhook_id[:100])
    deliveries = [webhooks.delivery_view(d) for d in store.list_deliveries(webhook_id, page=page, limit=limit)]
    return JSONResponse({"deliveries": deliveries, "page": page, "limit": limit})


def component_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of these operations (export_api/openapi.py adds them to the document)."""
    date_time = {"type": "string", "format": "date-time"}
    events = {"type": "string", "enum": list(webhooks.EVENTS)}
    delivered_file = {"$ref": "#/components/schemas/DeliveredFile"}  # export_api/destinations.py
    webhook = {
        "id": {"type": "string"},
        "campaignId": {"type": "string"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": events},
        "createdAt": date_time,
        "createdBy": {"type": "string", "description": "The `sub` of the token that subscribed."},
    }
    required = ["id", "campaignId", "url", "events", "createdAt"]
    error_classes = [
        webhooks.TIMEOUT,
        webhooks.CONNECTION_ERROR,
        webhooks.TLS_ERROR,
        webhooks.DNS_ERROR,
        webhooks.ADDRESS_REFUSED,
        webhooks.REDIRECT,
    ]
    return {
        "WebhookRequest": {
            "type": "object",
            "required": ["url", "events"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": webhooks.MAX_URL_LENGTH,
                    "format": "uri",
                    "description": "https:// (http:// too with WEBHOOK_ALLOW_PRIVATE=1); its host must resolve to"
                    " public addresses only (loopback/private too with WEBHOOK_ALLOW_PRIVATE=1; link-local never).",
                },
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": len(webhooks.EVENTS),
                    "uniqueItems": True,
                    "items": events,
                },
            },
            "example": {"url": "https://hooks.example.com/exports", "events": ["export.finished", "export.failed"]},
        },
        "Webhook": {
            "type": "object",
            "description": "A subscription; its secret is never listed.",
            "required": required,
            "additionalProperties": False,
            "properties": webhook,
        },
        "WebhookCreated": {
            "type": "object",
            "description": "A new subscription with the secret that signs its deliveries, shown this once.",
            "required": [*required, "secret"],
            "additionalProperties": False,
            "properties": {
                **webhook,
                "secret": {
                    "type": "string",
                    "pattern": "^whsec_[A-Za-z0-9+/]+=*$",
                    "description": "Standard Webhooks secret: `whsec_` + base64 of 32 random bytes.",
                },
            },
        },
        "WebhookList": {
            "type": "object",
            "required": ["webhooks"],
            "additionalProperties": False,
            "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}},
        },
        "WebhookAttempt": {
            "type": "object",
            "required": ["at", "httpStatus", "error", "nextAttemptAt"],
            "properties": {
                "at": date_time,
                "httpStatus": {"type": "integer", "nullable": True, "description": "The receiver's answer."},
                "error": {
                    "type": "string",
                    "nullable": True,
                    "enum": [*error_classes, None],
                    "description": "Why the attempt failed when there was no answer (or a redirect, not followed).",
                },
                "nextAttemptAt": {**date_time, "nullable": True},
            },
        },
        "WebhookDelivery": {
            "type": "object",
            "description": "One event for one subscription: `id` is its `webhook-id` header, the same on"
            " every attempt. Retried after 5 s, 30 s, 2 min, 10 min and 1 h, then given up (`reason`). For"
            " `schedule.paused`, `scheduleId` is the schedule and `exportId` the run whose failure paused it.",
            "required": ["id", "event", "exportId", "status", "createdAt", "attempts"],
            "properties": {
                "id": {"type": "string"},
                "event": events,
                "exportId": {"type": "string"},
                "scheduleId": {"type": "string"},
                "status": {"type": "string", "enum": [outbox.PENDING, outbox.DELIVERED, outbox.GAVE_UP]},
                "createdAt": date_time,
                "nextAttemptAt": {**date_time, "nullable": True},
                "lastAttemptAt": {**date_time, "nullable": True},
                "reason": {"type": "string", "description": "Why it was given up (status failed)."},
                "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookAttempt"}},
            },
        },
        "WebhookDeliveryList": {
            "type": "object",
            "required": ["deliveries", "page", "limit"],
            "additionalProperties": False,
            "properties": {
                "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookDelivery"}},
                "page": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
        },
        # The payload receivers get (documented here for them; no operation of this API returns it).
        "WebhookEvent": {
            "type": "object",
            "description": "The body POSTed to a subscription, signed per Standard Webhooks (`webhook-id`,"
            " `webhook-timestamp`, `webhook-signature`). `data` is the record as GET shows it, without download"
            " links, plus `href`, its API path; for `export.delivered` and `export.delivery_failed` also `delivery`,"
            " the delivery to one destination (as GET …/exports/{exportId}/deliveries shows it, without attempts).",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": events,
                "timestamp": date_time,
                "data": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ExportRecord"},
                        {
                            "type": "object",
                            "required": ["href"],
                            "properties": {
                                "href": {"type": "string"},
                                "delivery": {
                                    "type": "object",
                                    "required": ["destinationId", "status"],
                                    "properties": {
                                        "destinationId": {"type": "string"},
                                        "status": {"type": "string", "enum": ["delivered", "failed"]},
                                        "remotePath": {"type": "string", "nullable": True},
                                        "bytes": {"type": "integer", "nullable": True},
                                        "sha256": {"type": "string", "nullable": True},
                                        "files": {"type": "array", "items": delivered_file},
                                        "reason": {"type": "string"},
                                    },
                                },
                            },
                        },
                    ]
                },
            },
        },
    }


routes = [
    Route("/campaigns/{campaignId}/webhooks", CampaignWebhooks),
    Route("/campaigns/{campaignId}/webhooks/{webhookId}", delete_webhook, methods=["DELETE"]),
    Route("/campaigns/{campaignId}/webhooks/{webhookId}/deliveries", list_deliveries, methods=["GET"]),
]
