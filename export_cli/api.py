"""The HTTP side of the client: the API's address, its calls, and the exit codes its failures map to."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_OK, EXIT_EXPORT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader left (`| head`)


class CliError(Exception):
    """An expected failure: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """The few calls the commands make; every failure becomes a CliError with a one-line message."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.last_status = 0  # HTTP status of the last answer (POST: 201 new, 200 existing duplicate)

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = {"X-Request-ID": f"cli-{uuid.uuid4().hex}"}
        if auth:
            if not self.token:
                raise CliError("no token: set EXPORT_SERVICE_TOKEN or pass --token", EXIT_USAGE)
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.client.request(method, path, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the export-service API at {self.url} ({_why(exc, self.url)})", 4) from None
        except httpx.TimeoutException:
            raise CliError(f"the export-service API at {self.url} did not answer in time", 4) from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.url} failed ({type(exc).__name__})", EXIT_UNREACHABLE) from None
        self.last_status = response.status_code
        if response.status_code == 204:  # e.g. DELETE of a webhook: nothing to read
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CliError(f"the API answered {response.status_code} with a body that is not JSON", 3) from None
        raise CliError(_refusal(response), EXIT_REFUSED)

    def get_export(self, campaign_id: str, export_id: str) -> dict[str, Any]:
        return dict(self.request("GET", campaign_path(campaign_id, "exports", export_id)))


def campaign_path(campaign_id: str, collection: str, item_id: str | None = None, action: str = "") -> str:
    """`/campaigns/{c}/{collection}[/{item}][/{action}]`, ids percent-encoded (they are user data)."""
    path = f"/campaigns/{quote(campaign_id, safe='')}/{collection}"
    if item_id is not None:
        path += f"/{quote(item_id, safe='')}"
    return path + (f"/{action}" if action else "")


def fields_of(values: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The body of a POST: each of the API's `fields` that the command line gave a value (flags store under
    the field's name; an absent flag is None)."""
    return {field: values[field] for field in fields if values.get(field) is not None}


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in the chain of causes httpx wraps its transport errors in."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        if isinstance(seen, kind):
            return True
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def _why(exc: httpx.ConnectError, url: str) -> str:
    """Why a connection failed, in words: the name did not resolve, nobody listens, or other."""
    if _caused_by(exc, socket.gaierror):
        return f"the host name {urlsplit(url).hostname} could not be resolved"
    if _caused_by(exc, ConnectionRefusedError):
        return "connection refused"
    return "could not connect"


def checked_url(url: str) -> str:
    """The API's base URL if it is an http(s) URL with a host; CliError (usage) saying what to write."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise CliError(f"the API URL {url!r} names no host; write e.g. {DEFAULT_URL}", EXIT_USAGE)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise CliError(f"the API URL {url!r} has an invalid port; write e.g. {DEFAULT_URL}", EXIT_USAGE) from None
        return url
    if "://" in url:
        raise CliError(f"the API URL {url!r} must start with http:// or https://", EXIT_USAGE)
    raise CliError(f"the API URL {url!r} has no scheme; write http://{url} (or https://)", EXIT_USAGE)


def _refusal(response: httpx.Response) -> str:
    """The API's error message (SPEC §6 body), or the bare status when the body is something else."""
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase or "error"
    request_id = response.headers.get("x-request-id")
    suffix = f" (HTTP {response.status_code}, request id {request_id})" if request_id else f" ({response.status_code})"
    return " ".join(message.split()) + suffix
