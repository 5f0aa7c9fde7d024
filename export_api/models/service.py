"""Bodies and answers of the service's own endpoints: heartbeat, dev token."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from export_api.models.base import Body, Message, integral

MAX_DEV_TOKEN_SECONDS = 30 * 24 * 3600


class DevTokenRequest(Body):
    """Who the development token is for, and what it may do."""

    field_messages: ClassVar[dict[str, Message]] = {
        "userId": "'userId' must be a non-empty string.",
        "campaignId": "'campaignId' must be a non-empty string.",
        "permissions": "'permissions' must be a list of strings.",
        "supreme": "'supreme' must be true or false.",
        "expiresIn": f"'expiresIn' must be an integer number of seconds from 1 to {MAX_DEV_TOKEN_SECONDS}.",
    }

    userId: str = Field(min_length=1)
    campaignId: str = Field(min_length=1)
    permissions: list[str]
    supreme: bool = False
    expiresIn: Annotated[int, Field(ge=1, le=MAX_DEV_TOKEN_SECONDS), BeforeValidator(integral)] = Field(
        default=3600, description="seconds"
    )


class Token(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]
