"""Bodies and answers of the webhook endpoints (SPEC §11)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import models_json_schema

from export_api.models.base import MAX_LIMIT, MAX_PAGE, Body, invalid
from export_core import outbox, webhooks
from export_core.vocabulary import WEBHOOK_EVENTS

ERROR_CLASSES = [
    webhooks.TIMEOUT,
    webhooks.CONNECTION_ERROR,
    webhooks.TLS_ERROR,
    webhooks.DNS_ERROR,
    webhooks.ADDRESS_REFUSED,
    webhooks.REDIRECT,
]
EVENTS_NEEDED = f"'events' must be a non-empty list of: {', '.join(WEBHOOK_EVENTS)}."

Event = Annotated[str, Field(json_schema_extra={"enum": list(WEBHOOK_EVENTS)})]
NullableDateTime = datetime | None


class WebhookRequest(Body):
    """A subscription: where to POST, and for which events. The URL's address is checked later."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"url": "https://hooks.example.com/exports", "events": ["export.finished"]}}
    )

    field_messages: ClassVar[dict[str, str]] = {
        "url": "'url' must be a non-empty string.",
        "events": EVENTS_NEEDED,
    }

    url: str = Field(
        min_length=1,
        description="https:// (http:// too with WEBHOOK_ALLOW_PRIVATE=1); its host must resolve to public addresses"
        " only (loopback/private too with WEBHOOK_ALLOW_PRIVATE=1; link-local never).",
        json_schema_extra={"maxLength": webhooks.MAX_URL_LENGTH, "format": "uri"},  # check_url's own message
    )
    events: list[Event] = Field(min_length=1, json_schema_extra={"maxItems": len(WEBHOOK_EVENTS), "uniqueItems": True})

    @field_validator("events")
    @classmethod
    def _known_once(cls, events: list[str]) -> list[str]:
        for event in events:
            if event not in WEBHOOK_EVENTS:
                raise invalid(f"Unknown event '{event[:100]}'; events are: {', '.join(WEBHOOK_EVENTS)}.")
        if len(set(events)) != len(events):
            raise invalid("'events' must not repeat an event.")
        return events


class Webhook(BaseModel):
    """A subscription; its secret is never listed."""

    model_config = ConfigDict(extra="forbid")

    id: str
    campaignId: str
    url: str
    events: list[Event]
    createdAt: datetime
    createdBy: str | None = Field(None, description="The `sub` of the token that subscribed.")


class WebhookCreated(Webhook):
    """A new subscription with the secret that signs its deliveries, shown this once."""

    secret: str = Field(
        pattern="^whsec_[A-Za-z0-9+/]+=*$",
        description="Standard Webhooks secret: `whsec_` + base64 of 32 random bytes.",
    )


class WebhookList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: list[Webhook]


class WebhookAttempt(BaseModel):
    at: datetime
    httpStatus: int | None = Field(description="The receiver's answer.")
    error: str | None = Field(
        description="Why the attempt failed when there was no answer (or a redirect, not followed).",
        json_schema_extra={"enum": [*ERROR_CLASSES, None]},
    )
    nextAttemptAt: NullableDateTime


class WebhookDelivery(BaseModel):
    """One event for one subscription: `id` is its `webhook-id` header, the same on every attempt. Retried
    after 5 s, 30 s, 2 min, 10 min and 1 h, then given up (`reason`). For `schedule.paused`, `scheduleId` is
    the schedule and `exportId` the run whose failure paused it."""

    id: str
    event: Event
    exportId: str
    scheduleId: str | None = None
    status: str = Field(json_schema_extra={"enum": [outbox.PENDING, outbox.DELIVERED, outbox.GAVE_UP]})
    createdAt: datetime
    nextAttemptAt: NullableDateTime = None
    lastAttemptAt: NullableDateTime = None
    reason: str | None = Field(None, description="Why it was given up (status failed).")
    attempts: list[WebhookAttempt]


class WebhookDeliveryList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deliveries: list[WebhookDelivery]
    page: int = Field(ge=0, le=MAX_PAGE)
    limit: int = Field(ge=1, le=MAX_LIMIT)


class EventDelivery(BaseModel):
    """The delivery to one destination (as GET …/exports/{exportId}/deliveries shows it, without attempts)."""

    destinationId: str
    status: str = Field(json_schema_extra={"enum": ["delivered", "failed"]})
    remotePath: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    files: list[Annotated[dict[str, Any], WithJsonSchema({"$ref": "#/components/schemas/DeliveredFile"})]] = []
    reason: str | None = None


class EventData(BaseModel):
    """The record as GET shows it, without download links, plus `href`, its API path."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"allOf": [{"$ref": "#/components/schemas/ExportRecord"}]}
    )

    href: str
    delivery: EventDelivery | None = Field(None, description="For export.delivered and export.delivery_failed.")


class WebhookEvent(BaseModel):
    """The body POSTed to a subscription, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`). Documented for receivers; no operation of this API returns it."""

    type: Event
    timestamp: datetime
    data: EventData


def receiver_schemas() -> dict[str, Any]:
    """The component schemas of what receivers get (export_api/openapi.py adds them to the document)."""
    _, found = models_json_schema([(WebhookEvent, "serialization")], ref_template="#/components/schemas/{model}")
    return dict(found["$defs"])
