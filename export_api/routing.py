"""What every path operation shares: its route class, the caller's principal, its error responses.

A resource module declares `router = APIRouter(route_class=ApiRoute)`; an operation takes its body as a
`Body` model, its query parameters as a `QueryModel` (`Annotated[Model, Query()]`) and the caller as
`Report` (REPORT on the path's campaign) or `Supreme`. FastAPI solves those dependencies before it
validates the body, so a caller without a token learns nothing about the body it sent; a refused body
or parameter is answered by `validation_error_handler` with the model's own sentence.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from fastapi import Depends, Path, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from export_api import auth
from export_api.errors import error_response
from export_api.models.base import MAX_BODY_BYTES, Body, QueryModel, refusal
from export_api.state import authenticate, authorize_report

# The shared error responses of components/responses (export_api/openapi.py), by status.
ERROR_RESPONSES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalError",
    503: "Unavailable",
}

bearer = HTTPBearer(
    auto_error=False,  # the token is checked by auth.TokenVerifier, which answers in our error shape
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description='RS256 JWT: `sub`, `exp`, `campaigns` {campaignId: ["REPORT"]}, optional `supreme`.',
)
# The path's campaign; the example is the demo campaign `make run` seeds (and the fuzz run's).
CampaignId = Annotated[str, Path(examples=["123"])]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]  # for the document only


def report_principal(request: Request, campaignId: CampaignId, _: Credentials) -> auth.Principal:
    """The caller, who holds REPORT on the path's campaign (401 otherwise)."""
    return authorize_report(request, campaignId)


def supreme_principal(request: Request, _: Credentials) -> auth.Principal:
    """The caller, whose token is supreme (401 otherwise)."""
    return auth.require_supreme(authenticate(request))


Report = Annotated[auth.Principal, Depends(report_principal)]
Supreme = Annotated[auth.Principal, Depends(supreme_principal)]


def error_responses(*statuses: int) -> dict[str, Any]:
    """`openapi_extra` of an operation: references to the shared error responses it can answer."""
    return {"responses": {str(s): {"$ref": f"#/components/responses/{ERROR_RESPONSES[s]}"} for s in statuses}}


class LenientRequest(Request):
    """Reads at most MAX_BODY_BYTES (and one chunk), and hands FastAPI the raw bytes of a body that is not
    JSON instead of raising: `Body` refuses them after authentication, in our words."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            raw = bytearray()
            async for chunk in self.stream():
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    break
            self._body = bytes(raw)
        return self._body

    async def json(self) -> Any:
        raw = await self.body()
        if len(raw) > MAX_BODY_BYTES:
            return raw
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return raw


def request_models(endpoint: Callable[..., Any]) -> dict[str, type[Body] | type[QueryModel]]:
    """The endpoint's `Body` and `QueryModel` parameters, by where FastAPI reports their errors."""
    found: dict[str, type[Body] | type[QueryModel]] = {}
    for hint in get_type_hints(endpoint, include_extras=True).values():
        model = get_args(hint)[0] if get_origin(hint) is Annotated else hint
        if inspect.isclass(model) and issubclass(model, Body):
            found["body"] = model
        elif inspect.isclass(model) and issubclass(model, QueryModel):
            found["query"] = model
    return found


class ApiRoute(APIRoute):
    """An APIRoute that reads its body through LenientRequest, knows its request models, and answers HEAD
    as GET (as Starlette's own routes do; the document lists GET only)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.request_models = request_models(endpoint)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL and self._head_as_get(scope):
            return Match.FULL, child_scope
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._head_as_get(scope):
            await self.app(scope, receive, send)
        else:
            await super().handle(scope, receive, send)

    def _head_as_get(self, scope: Scope) -> bool:
        return scope.get("method") == "HEAD" and "GET" in (self.methods or set())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lenient(request: Request) -> Response:
            return await handler(LenientRequest(request.scope, request.receive))

        return lenient


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """A refused path parameter, query parameter or body (in that order): the model's sentence."""
    assert isinstance(exc, RequestValidationError)
    models = getattr(request.scope.get("route"), "request_models", {})
    errors = list(exc.errors())
    for where in ("path", "query", "body"):
        found = [{**e, "loc": tuple(e["loc"][1:])} for e in errors if tuple(e["loc"][:1]) == (where,)]
        if found:
            refused = refusal(models.get(where), found)
            return error_response(refused.status, refused.message, refused.payload, refused.headers)
    return error_response(400, "Bad request.")
