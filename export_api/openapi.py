"""`GET /openapi.json` and `GET /docs` (SPEC §6): the API described from its own code.

FastAPI generates the document (OpenAPI 3.1) from the path operations and their pydantic models
(export_api/routing.py). Operations not yet written as path operations carry their operation as YAML
after `---` in their docstring (read by Starlette's `SchemaGenerator`) and are merged in, with the shared
component schemas built here from the constants the endpoints use. Every operation then gets what
they all share: the request-id header, 404/500 (and 401 with a token). Swagger UI 5's assets come from
the pinned `swagger-ui-py` package, served from this process.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles

from export_api import destinations, webhooks
from export_api.models.base import MAX_LIMIT, MAX_PAGE, Error

MAX_REQUEST_ID_LENGTH = 128
ERROR_STATUSES = {
    400: (
        "BadRequest",
        "Invalid input: unknown export type, campaign not found, bad dateKey, a format the type is not offered in, "
        "malformed body.",
    ),
    401: ("Unauthorized", "No, invalid or expired token, or it lacks the permission this operation needs."),
    404: ("NotFound", "No such export (also: an export of another campaign), or no such path."),
    409: (
        "Conflict",
        "A re-run of an export that is not FAILED or EXPIRED, or whose last run is still ending (with Retry-After).",
    ),
    413: ("PayloadTooLarge", "The request body is too large."),
    429: ("TooManyRequests", "The campaign already has the maximum number of PENDING exports."),
    500: ("InternalError", "An internal fault; the body never carries a stack trace."),
    503: (
        "Unavailable",
        "The database, or another dependency the request needs (the export engine, for a re-run), is unreachable.",
    ),
}
# Errors of one resource, described for it (same body and headers as the ones above).
RESOURCE_ERRORS = {
    "DestinationBadRequest": (
        400,
        "A field the service refuses (`payload` names it: e.g. `hostKey` that is not a host key, `pgpPublicKey`"
        " that has expired, `host` that resolves to a private address), campaign not found, or a malformed body.",
    ),
    "DestinationNotFound": (404, "No such destination in this campaign (also: another campaign's destination)."),
}


def component_schemas() -> dict[str, Any]:
    """Schemas of the docstring operations (the path operations' come from their models)."""
    return {
        "Error": Error.model_json_schema(),
        **webhooks.component_schemas(),  # SPEC §11, next to their operations in export_api/webhooks.py
        **destinations.component_schemas(),  # SPEC §13, export_api/destinations.py
    }


def _request_id_header() -> dict[str, Any]:
    return {
        "description": "The request's own X-Request-ID when valid, else one generated for it.",
        "required": True,
        "schema": {"type": "string", "maxLength": MAX_REQUEST_ID_LENGTH},
    }


def components(max_limit: int, max_page: int) -> dict[str, Any]:
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses: dict[str, Any] = {}
    errors = {name: (status, description) for status, (name, description) in ERROR_STATUSES.items()}
    for name, (status, description) in {**errors, **RESOURCE_ERRORS}.items():
        headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
        if status == 429:
            headers["Retry-After"] = {
                "description": "Seconds to wait before asking again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        responses[name] = {"description": description, "headers": headers, "content": error_content}
    return {
        "schemas": component_schemas(),
        "responses": responses,
        "headers": {"X-Request-ID": _request_id_header()},
        "parameters": {
            "campaignId": {
                "name": "campaignId",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "example": "123",  # the demo campaign `make run` seeds
            },
            "exportId": {"name": "exportId", "in": "path", "required": True, "schema": {"type": "string"}},
            "destinationId": {"name": "destinationId", "in": "path", "required": True, "schema": {"type": "string"}},
            "RequestId": {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "Printable, at most 128 characters; otherwise a new id is generated.",
                "schema": {"type": "string"},
            },
            "page": {
                "name": "page",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": max_page, "default": 0},
            },
            "limit": {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": max_limit, "default": 20},
            },
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": 'RS256 JWT: `sub`, `exp`, `campaigns` {campaignId: ["REPORT"]}, optional `supreme`.',
            }
        },
    }


def _openapi_31(node: Any) -> Any:
    """The hand-written schemas say `nullable` (OpenAPI 3.0); 3.1 (JSON Schema) says `type: [.., "null"]`."""
    if isinstance(node, list):
        return [_openapi_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi_31(value) for key, value in node.items()}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def build_schema(routes: list[BaseRoute], *, max_limit: int, max_page: int) -> dict[str, Any]:
    """FastAPI's document of the path operations, the docstring operations merged in, the shared parts added."""
    schema = get_openapi(
        title="export-service",
        version="0.1.0",
        description="Campaign-data exports (CSV, csv.gz, Parquet, xlsx or ZIP in S3), queued and run one at a time.",
        routes=routes,
    )
    described = SchemaGenerator({}).get_schema([r for r in routes if not isinstance(r, APIRoute)])
    for path, operations in _openapi_31(described.get("paths", {})).items():
        schema.setdefault("paths", {}).setdefault(path, {}).update(operations)
    shared = components(max_limit, max_page)
    found = schema.setdefault("components", {})
    found.setdefault("schemas", {}).update(_openapi_31(shared.pop("schemas")))
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this API answers as 400
        found["schemas"].pop(name, None)
    found.update(shared)
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
                    response.setdefault("headers", {})["X-Request-ID"] = {"$ref": "#/components/headers/X-Request-ID"}
    return schema


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 description of this app, generated from its routes once per process.
    ---
    summary: This API's OpenAPI 3 document
    operationId: getOpenApi
    tags: [meta]
    responses:
      "200":
        description: The document.
        content:
          application/json:
            schema: {type: object}
    """
    app = request.app
    schema = getattr(app.state, "openapi_schema", None)
    if schema is None:
        schema = build_schema(app.routes, max_limit=MAX_LIMIT, max_page=MAX_PAGE)
        app.state.openapi_schema = schema
    return JSONResponse(schema)


SWAGGER_DIR = str(files("swagger_ui") / "static")  # swagger-ui-py's copy of Swagger UI 5
ASSETS = "/docs/assets"
# Everything the page needs comes from this origin; inline styles are Swagger UI's own.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>export-service API</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS}/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
DOCS_INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""


async def docs(request: Request) -> Response:
    """Interactive Swagger UI for /openapi.json, with assets served by this process.
    ---
    summary: Interactive API documentation (Swagger UI)
    operationId: getDocs
    tags: [meta]
    responses:
      "200":
        description: The HTML page.
        content:
          text/html:
            schema: {type: string}
    """
    return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP})


async def docs_init(request: Request) -> Response:
    return Response(DOCS_INIT_JS, media_type="text/javascript")


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/docs/init.js", docs_init, methods=["GET"], include_in_schema=False),
    Mount(ASSETS, app=StaticFiles(directory=SWAGGER_DIR), name="docs-assets"),
]
