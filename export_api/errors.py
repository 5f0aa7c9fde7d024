"""One error shape for every failure (SPEC §6): {"error": {"status", "message", "payload"}}."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

logger = logging.getLogger("export_api")

SCOPE_KEY = "export_service.request_id"  # set by the request-id middleware; read by handlers outside it
UNAVAILABLE_MESSAGE = "The export database is unreachable right now; please try again in a moment."

_DEFAULT_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Internal server error.",
    503: UNAVAILABLE_MESSAGE,
}


class ApiError(Exception):
    """Raised by endpoints and helpers; rendered by `api_error_handler`."""

    def __init__(self, status: int, message: str, payload: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.payload = payload
        self.headers = dict(headers or {})


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: text echoed from a request may hold lone surrogates (`"\\ud800"`)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
            return text.encode("utf-8", errors="replace")


def error_response(
    status: int, message: str, payload: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"status": status, "message": message, "payload": payload}}
    return SafeJSONResponse(body, status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.payload, exc.headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method) in our error shape; a 405 allows the methods
    of every route of the path (FastAPI has one route per method)."""
    assert isinstance(exc, HTTPException)
    message = _DEFAULT_MESSAGES.get(exc.status_code, exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is Match.PARTIAL
            for method in route.methods
        }
        if "GET" in allowed:
            allowed.add("HEAD")  # answered as GET by every route (export_api/routing.py ApiRoute)
        headers["Allow"] = ", ".join(sorted(allowed)) or headers.get("Allow", "")
    return error_response(exc.status_code, message, headers=headers)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Log the fault with its traceback server-side; the client sees no internals.

    Only the method and route template are logged next to the traceback, never headers,
    so bearer tokens cannot end up in logs.
    """
    logger.error("unhandled error on %s %s", request.method, route_template(request.scope), exc_info=exc)
    return error_response(500, _DEFAULT_MESSAGES[500], headers=_request_id_header(request))


def _request_id_header(request: Request) -> dict[str, str]:
    """This handler answers outside the request-id middleware, so it adds the header itself."""
    request_id = request.scope.get(SCOPE_KEY)
    return {"X-Request-ID": request_id} if isinstance(request_id, str) else {}


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """MongoDB unreachable or too slow: 503 with a plain sentence; the detail goes to the log only."""
    assert isinstance(exc, PyMongoError)
    if not (isinstance(exc, ConnectionFailure) or exc.timeout):
        return await internal_error_handler(request, exc)
    logger.warning(
        "database unavailable on %s %s: %s", request.method, route_template(request.scope), type(exc).__name__
    )
    return error_response(503, UNAVAILABLE_MESSAGE, headers={"Retry-After": "2"})


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (no user data), or "<unmatched>"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


exception_handlers: dict[Any, Any] = {
    ApiError: api_error_handler,
    PyMongoError: database_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
