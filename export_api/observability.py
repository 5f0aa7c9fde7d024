"""Request ids and JSON access logs (SPEC §6): every response carries X-Request-ID.

The id is the caller's own `X-Request-ID` when it is printable ASCII of at most 128
characters that does not look like a token, e-mail address or phone number (ids are logged
and stored), else a fresh uuid4 hex. It lives in a context variable for the request, so
every log line written while serving it (threads included: Starlette's thread pool copies
the context) carries `request_id`, and `export_id` once the endpoint knows which export the
request is about.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from export_api.errors import SCOPE_KEY, route_template
from export_core.json_logs import JsonFormatter, looks_sensitive

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128

access_logger = logging.getLogger("export_api.access")


@dataclass
class RequestContext:
    """Mutable on purpose: an endpoint running in a worker thread sets `export_id` on the same object."""

    request_id: str
    export_id: str | None = None


current: ContextVar[RequestContext | None] = ContextVar("export_api_request", default=None)


def valid_request_id(value: str | None) -> bool:
    if not value or len(value) > MAX_REQUEST_ID_LENGTH:
        return False
    return all(0x21 <= ord(c) <= 0x7E for c in value) and not looks_sensitive(value)


def request_id_for(value: str | None) -> str:
    return value if value is not None and valid_request_id(value) else uuid.uuid4().hex


def set_export_id(export_id: str) -> None:
    """Name the export the current request is about (only ids the service generated)."""
    context = current.get()
    if context is not None:
        context.export_id = export_id


class RequestContextMiddleware:
    """Pure ASGI middleware: assigns the request id, echoes it, and writes one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_for(raw.decode("latin-1") if raw is not None else None)
        scope[SCOPE_KEY] = request_id
        context = RequestContext(request_id)
        token = current.set(context)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_logger.info(
                "%s %s %s",
                scope["method"],
                route_template(scope),
                status,
                extra={
                    "method": scope["method"],
                    "route": route_template(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            current.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current request's ids onto every record (unless the record names its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current.get()
        if context is not None:
            if getattr(record, "request_id", None) is None:
                record.request_id = context.request_id
            if getattr(record, "export_id", None) is None and context.export_id is not None:
                record.export_id = context.export_id
        return True


API_LOG_FILE = "api.jsonl"


def json_log_handler(log_dir: Path) -> logging.Handler:
    """A handler writing JSON lines to `log_dir/api.jsonl`, with the request's ids on each line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / API_LOG_FILE, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def install_log_handler(handler: logging.Handler) -> None:
    """Ours at INFO, everything else at its own level (WARNING by default), all through `handler`."""
    logging.getLogger().addHandler(handler)
    logging.getLogger("export_api").setLevel(logging.INFO)
    # uvicorn's "uvicorn" logger does not propagate to the root under its default config
    # ("uvicorn.error" propagates to it; "uvicorn.access", with raw paths, is left out on purpose).
    logging.getLogger("uvicorn").addHandler(handler)


def remove_log_handler(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    logging.getLogger("uvicorn").removeHandler(handler)
    handler.close()
