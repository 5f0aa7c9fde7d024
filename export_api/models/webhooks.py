"""Bodies of the webhook endpoints (SPEC §11)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from export_api.models.base import Body, invalid
from export_core.webhooks import EVENTS

EVENTS_NEEDED = f"'events' must be a non-empty list of: {', '.join(EVENTS)}."


class WebhookRequest(Body):
    """A subscription: where to POST, and for which events. The URL's address is checked later."""

    field_messages: ClassVar[dict[str, str]] = {
        "url": "'url' must be a non-empty string.",
        "events": EVENTS_NEEDED,
    }

    url: str = Field(min_length=1)
    events: list[str] = Field(min_length=1)

    @field_validator("events")
    @classmethod
    def _known_once(cls, events: list[str]) -> list[str]:
        for event in events:
            if event not in EVENTS:
                raise invalid(f"Unknown event '{event[:100]}'; events are: {', '.join(EVENTS)}.")
        if len(set(events)) != len(events):
            raise invalid("'events' must not repeat an event.")
        return events
