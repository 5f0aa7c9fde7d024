"""`GET /openapi.json` (SPEC §6): the document FastAPI generates from the path operations and their models.

What is configured here is only what every operation shares: the error responses (one body, the
`Error` model), the `X-Request-ID` header on every answer, 404/500 everywhere and 401 where a token is
needed. The schemas of what webhook receivers get are added, though no operation returns them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from export_api.models.base import Error
from export_api.models.webhooks import receiver_schemas
from export_api.routing import ERROR_RESPONSES, ApiRoute

MAX_REQUEST_ID_LENGTH = 128
# The shared error responses (export_api/routing.py error_responses refers to them by status).
ERROR_DESCRIPTIONS = {
    400: "Invalid input: unknown export type, campaign not found, bad dateKey, a format the type is not offered in, "
    "malformed body.",
    401: "No, invalid or expired token, or it lacks the permission this operation needs.",
    404: "No such export (also: an export of another campaign), or no such path.",
    409: "A re-run of an export that is not FAILED or EXPIRED, or whose last run is still ending (with Retry-After).",
    413: "The request body is too large.",
    429: "The campaign already has the maximum number of PENDING exports.",
    500: "An internal fault; the body never carries a stack trace.",
    503: "The database, or another dependency the request needs (the export engine, for a re-run), is unreachable.",
}
REQUEST_ID = {"$ref": "#/components/headers/X-Request-ID"}

router = APIRouter(route_class=ApiRoute, tags=["meta"])


def shared_components() -> dict[str, Any]:
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    named = {ERROR_RESPONSES[status]: (status, text) for status, text in ERROR_DESCRIPTIONS.items()}
    responses: dict[str, Any] = {}
    for name, (status, description) in named.items():
        headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID}
        if status == 429:
            headers["Retry-After"] = {
                "description": "Seconds to wait before asking again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        responses[name] = {"description": description, "headers": headers, "content": error_content}
    return {
        "responses": responses,
        "headers": {
            "X-Request-ID": {
                "description": "The request's own X-Request-ID when valid, else one generated for it.",
                "required": True,
                "schema": {"type": "string", "maxLength": MAX_REQUEST_ID_LENGTH},
            }
        },
        "parameters": {
            "RequestId": {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": f"Printable, at most {MAX_REQUEST_ID_LENGTH} characters; else a new id is generated.",
                "schema": {"type": "string"},
            }
        },
    }


def build_schema(routes: list[BaseRoute]) -> dict[str, Any]:
    """FastAPI's document of the routes, with what every operation shares added."""
    schema = get_openapi(
        title="export-service",
        version="0.1.0",
        description="Campaign-data exports (CSV, csv.gz, Parquet, xlsx or ZIP in S3), queued and run one at a time.",
        routes=routes,
    )
    found = schema.setdefault("components", {})
    schemas = found.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this API answers as 400
        schemas.pop(name, None)
    schemas.setdefault("Error", Error.model_json_schema())
    for name, receivers in receiver_schemas().items():
        schemas.setdefault(name, receivers)
    found.update(shared_components())
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/RequestId"})
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            common = {"404": "NotFound", "500": "InternalError"}
            if operation.get("security"):
                common["401"] = "Unauthorized"
            for status, name in common.items():
                responses.setdefault(status, {"$ref": f"#/components/responses/{name}"})
            for response in responses.values():
                if "$ref" not in response:
                    response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    return schema


@router.get(
    "/openapi.json",
    summary="This API's OpenAPI 3.1 document",
    operation_id="getOpenApi",
    response_model=dict[str, Any],
    response_description="The document.",
)
async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 description of this app, generated from its routes once per process."""
    app = request.app
    schema = getattr(app.state, "openapi_schema", None)
    if schema is None:
        schema = build_schema(app.routes)
        app.state.openapi_schema = schema
    return JSONResponse(schema)
