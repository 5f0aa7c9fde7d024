"""One error shape for every failure (SPEC §6): {"error": {"status", "message", "payload"}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("export_api")

_DEFAULT_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Internal server error.",
    503: "Service unavailable.",
}


class ApiError(Exception):
    """Raised by endpoints and helpers; rendered by `api_error_handler`."""

    def __init__(self, status: int, message: str, payload: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.payload = payload
        self.headers = dict(headers or {})


def error_response(
    status: int, message: str, payload: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "payload": payload}}, status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.payload, exc.headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method) in our error shape."""
    assert isinstance(exc, HTTPException)
    message = _DEFAULT_MESSAGES.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Log the fault with its traceback server-side; the client sees no internals.

    Only the method and route template are logged next to the traceback, never headers,
    so bearer tokens cannot end up in logs.
    """
    logger.error("unhandled error on %s %s", request.method, route_template(request.scope), exc_info=exc)
    return error_response(500, _DEFAULT_MESSAGES[500])


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (no user data), or "<unmatched>"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


exception_handlers: dict[Any, Any] = {
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
