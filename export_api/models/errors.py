"""The error body (SPEC §6) and the one place a refused request body becomes our sentence.

A body model states, per field, the sentence for pydantic's own refusals (missing, wrong type, too
short) in `field_messages`; its validators raise `invalid(sentence)` for the
rest. The answer names the first problem in today's order: not an object, then an unknown field (the
first by name), then the fields in their declared order.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from export_api.errors import ApiError

NOT_AN_OBJECT = "Request body must be a JSON object."


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=400, le=599)
    message: str = Field(description="One plain sentence.")
    payload: str = Field(description="The offending value (cut to 100 characters), or empty.")


class Error(BaseModel):
    """Every error (SPEC §6)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Body(BaseModel):
    """A request body: a JSON object of exactly its fields, values of exactly their JSON types."""

    model_config = ConfigDict(extra="forbid", strict=True)

    field_messages: ClassVar[dict[str, str]] = {}


def invalid(sentence: str) -> PydanticCustomError:
    """A validator's refusal whose message is `sentence` as it stands (braces in echoed input included)."""
    return PydanticCustomError("invalid", "{sentence}", {"sentence": sentence})


BodyT = TypeVar("BodyT", bound=Body)


def parse_body(model: type[BodyT], body: Any) -> BodyT:
    """`body` (parsed JSON) as `model`, or ApiError(400) with the sentence for its first problem."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, first_message(model, exc)) from None


def first_message(model: type[Body], exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "model_type" and not e["loc"] for e in errors):
        return NOT_AN_OBJECT
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"Unknown field in the request body: '{unknown[0][:100]}'."
    order = list(model.model_fields)
    first = min(errors, key=lambda e: order.index(str(e["loc"][0])) if e["loc"] else -1)
    if first["type"] == "invalid":
        return str(first["msg"])
    return model.field_messages.get(str(first["loc"][0]) if first["loc"] else "", NOT_AN_OBJECT)
