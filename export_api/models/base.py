"""The error body (SPEC §6), the bases of request models, and the one place a refused request becomes
our sentence.

A request model (a `Body`, or a `QueryModel` for query parameters) states, per field, the sentence for
pydantic's own refusals (missing, wrong type, too short) in `field_messages`; its validators raise
`invalid(sentence)` for the rest. `refusal` turns pydantic's errors into the answer: the first problem
in today's order — not JSON, not an object, then an unknown field (the first by name), then the fields
in their declared order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from export_api.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
NOT_JSON = "Request body must be valid JSON."
TOO_LARGE = f"Request body is larger than {MAX_BODY_BYTES} bytes."
NOT_AN_OBJECT = "Request body must be a JSON object."
MAX_LIMIT = 100
MAX_PAGE = 1_000_000  # keeps page * limit far inside what a MongoDB skip accepts
# A sentence, or (sentence, payload); "{input}" in a payload is the refused value, cut to 100 characters.
Message = str | tuple[str, str]
ECHO = "{input}"


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=400, le=599)
    message: str = Field(description="One plain sentence.")
    payload: str = Field(description="The offending value (cut to 100 characters) or field, or empty.")


class Error(BaseModel):
    """Every error (SPEC §6)."""

    model_config = ConfigDict(extra="forbid")

    # Inline, so the schema stands alone (clients validate error bodies against it).
    error: Annotated[ErrorDetail, WithJsonSchema(ErrorDetail.model_json_schema())]


def invalid(sentence: str, payload: str = "") -> PydanticCustomError:
    """A validator's refusal whose message is `sentence` as it stands (braces in echoed input included).

    pydantic cannot hold a lone surrogate (JSON may escape one): it becomes "?", as in any error body."""

    def held(text: str) -> str:
        return text.encode("utf-8", "replace").decode("utf-8")

    return PydanticCustomError("invalid", "{sentence}", {"sentence": held(sentence), "payload": held(payload)})


class Body(BaseModel):
    """A JSON request body: an object of exactly its fields, values of exactly their JSON types.

    FastAPI hands over raw bytes when the Content-Type is not JSON; they are decoded all the same (as
    the API always did), and what is too large or not JSON is refused here, after authentication.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    field_messages: ClassVar[Mapping[str, Message]] = {}

    @model_validator(mode="before")
    @classmethod
    def _decoded(cls, data: Any) -> Any:
        return decoded(data)


def decoded(data: Any) -> Any:
    """A body as parsed JSON: raw bytes decoded, or refused when too large or not JSON. A subclass's own "before"
    validator runs ahead of Body's, so one that reads the body as a whole calls this first."""
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_BODY_BYTES:
            raise PydanticCustomError("too_large", TOO_LARGE)
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise PydanticCustomError("json_invalid", NOT_JSON) from None
    return data


def integral(value: object) -> object:
    """For a `BeforeValidator` of an integer field of a Body: JSON has one number type, and OpenAPI 3.1's
    `integer` is any number without a fraction, so 30.0 is 30 (strict would refuse it); 1.5 and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class QueryModel(BaseModel):
    """Query parameters as one model (FastAPI `Annotated[Model, Query()]`); unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")

    field_messages: ClassVar[Mapping[str, Message]] = {}


ModelT = TypeVar("ModelT", bound=Body)


def parse_body(model: type[ModelT], body: Any) -> ModelT:
    """`body` (parsed JSON) as `model`, or ApiError(400) with the sentence for its first problem."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refusal(model, exc.errors(include_url=False)) from None


def refusal(model: type[BaseModel] | None, errors: Sequence[Any]) -> ApiError:
    """The ApiError for pydantic `errors` of `model`, their `loc` relative to it (no "body"/"query")."""
    types = {e["type"] for e in errors}
    if "too_large" in types:
        return ApiError(413, TOO_LARGE)
    if "json_invalid" in types or any(e["type"] == "missing" and not e["loc"] for e in errors):
        return ApiError(400, NOT_JSON)  # FastAPI reports an empty body as the body missing
    if any(e["type"] in ("model_type", "model_attributes_type", "dict_type") and not e["loc"] for e in errors):
        return ApiError(400, NOT_AN_OBJECT)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return ApiError(400, f"Unknown field in the request body: '{unknown[0][:100]}'.")
    fields = list(model.model_fields) if model is not None else []
    first = min(errors, key=lambda e: fields.index(str(e["loc"][0])) if e["loc"] and e["loc"][0] in fields else -1)
    if first["type"] == "invalid":
        ctx = first.get("ctx") or {}
        return ApiError(400, str(ctx.get("sentence", first["msg"])), str(ctx.get("payload", "")))
    messages: Mapping[str, Message] = getattr(model, "field_messages", {})
    message = messages.get(str(first["loc"][0]) if first["loc"] else "", NOT_AN_OBJECT)
    if isinstance(message, str):
        return ApiError(400, message)
    sentence, payload = message
    return ApiError(400, sentence, payload.replace(ECHO, str(first.get("input", ""))[:100]))


def plain_digits(value: object) -> object:
    """A query parameter that is an integer as written by hand: ASCII digits only, at most 9 of them (int()
    of thousands of digits is refused by Python itself); its field's message answers anything else."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise PydanticCustomError("int_parsing", "not an integer written in digits")
    return value


class PageQuery(QueryModel):
    """`page` and `limit` of every list."""

    field_messages: ClassVar[Mapping[str, Message]] = {
        "page": (f"'page' must be an integer from 0 to {MAX_PAGE}.", ECHO),
        "limit": (f"'limit' must be an integer from 1 to {MAX_LIMIT}.", ECHO),
    }

    # The bounds before the digits check, so the document says them as `minimum`/`maximum`.
    page: Annotated[int, Field(ge=0, le=MAX_PAGE), BeforeValidator(plain_digits)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(plain_digits)] = 20
