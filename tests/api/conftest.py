"""API fixtures: an app against the session's real MongoDB and S3 servers, and token makers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.export_types import EXPORT_TYPES, ExportType
from export_core.settings import Settings
from tests.conftest import free_port

CAMPAIGN = "camp-7f3a91"
OTHER_CAMPAIGN = "camp-0b22c4"
EXPORTS = f"/campaigns/{CAMPAIGN}/exports"

TokenFactory = Callable[..., str]


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    """The response has `status` and exactly the SPEC §6 error body; returns its `error` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "message", "payload"}
    assert body["error"]["status"] == status and isinstance(body["error"]["payload"], str)
    if message is not None:
        assert body["error"]["message"] == message
    return dict(body["error"])


@pytest.fixture
def campaigns(db: Database) -> None:
    db.campaigns.insert_many(
        [
            {"_id": CAMPAIGN, "name": "Summer Tour 2024", "type": "standard", "artist": {"name": "The Band"}},
            {"_id": OTHER_CAMPAIGN, "name": "Winter Tour", "type": "fanclub"},
        ]
    )


@pytest.fixture
def make_token(jwt_keys: tuple[str, str]) -> TokenFactory:
    """RS256 tokens signed with the test key; every claim can be overridden or dropped (None)."""

    def make(
        sub: str | None = "user-1",
        campaigns: dict[str, list[str]] | None = None,
        supreme: bool | None = None,
        expires_in: int | None = 3600,
        key: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {"campaigns": {CAMPAIGN: ["REPORT"]} if campaigns is None else campaigns}
        if sub is not None:
            claims["sub"] = sub
        if supreme is not None:
            claims["supreme"] = supreme
        if expires_in is not None:
            claims["exp"] = int(time.time()) + expires_in
        return jwt.encode(claims, key or jwt_keys[0], algorithm="RS256")

    return make


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A hand-built JWT, for algorithms PyJWT rightly refuses to produce (none, HS256 with a PEM)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


@pytest.fixture
def token(make_token: TokenFactory) -> str:
    return make_token(campaigns={CAMPAIGN: ["REPORT"], OTHER_CAMPAIGN: ["REPORT"]})


@pytest.fixture
def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(settings: Settings, campaigns: None) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def extra_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register stand-ins for types other teams add later: a dateKey type and a multi-key type elsewhere."""
    for export_type in (
        ExportType(name="codeWaves", bucket="vfScoringS3", requires_date_key=True),
        ExportType(name="autoReminderEmail", bucket="sfmcS3", packaging="multi_csv"),
    ):
        monkeypatch.setitem(EXPORT_TYPES, export_type.name, export_type)


class FakeDagster:
    """A tiny Dagster GraphQL stand-in over real HTTP: canned answers by run id."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                status, answer = fake.answer(body["variables"]["runId"])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graphql"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def answer(run_id: str) -> tuple[int, dict[str, Any]]:
        if run_id == "run-slow":
            time.sleep(2.5)
        if run_id == "run-broken":
            return 500, {"error": "boom"}
        if run_id.startswith("run-done"):
            run = {"__typename": "Run", "runId": run_id, "status": "SUCCESS", "stepStats": []}
            return 200, {"data": {"runOrError": run}}
        if run_id.startswith("run-ok"):
            steps = [
                {"stepKey": "extract", "status": "SUCCESS"},
                {"stepKey": "transform", "status": "SUCCESS"},
                {"stepKey": "package", "status": "IN_PROGRESS"},
            ]
            run = {"__typename": "Run", "runId": run_id, "status": "STARTED", "stepStats": steps}
            return 200, {"data": {"runOrError": run}}
        return 200, {"data": {"runOrError": {"__typename": "RunNotFoundError"}}}


@pytest.fixture
def fake_dagster() -> Iterator[FakeDagster]:
    fake = FakeDagster()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


class LiveServer:
    """The app served by a real uvicorn on 127.0.0.1 in a thread: real HTTP for the CLI, a browser, fuzzers."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_api(settings: Settings, campaigns: None) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as server:
        yield server
