"""/openapi.json is a valid OpenAPI 3 document of every route; /docs renders it in a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from export_api.app import create_app
from export_api.models.exports import export_request_variants
from export_core.export_types import EXPORT_TYPES
from export_core.settings import Settings
from tests.api.conftest import LiveServer

HTTP_METHODS = ("get", "post", "patch", "delete")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AUTHENTICATED = {
    ("/campaigns/{campaignId}/exports", "get"),
    ("/campaigns/{campaignId}/exports", "post"),
    ("/campaigns/{campaignId}/exports/{exportId}", "get"),
    ("/campaigns/{campaignId}/exports/{exportId}/rerun", "post"),
    ("/ccpa/users/{userId}", "delete"),
    ("/campaigns/{campaignId}/webhooks", "get"),
    ("/campaigns/{campaignId}/webhooks", "post"),
    ("/campaigns/{campaignId}/webhooks/{webhookId}", "delete"),
    ("/campaigns/{campaignId}/webhooks/{webhookId}/deliveries", "get"),
    ("/campaigns/{campaignId}/schedules", "get"),
    ("/campaigns/{campaignId}/schedules", "post"),
    ("/campaigns/{campaignId}/schedules/{scheduleId}", "get"),
    ("/campaigns/{campaignId}/schedules/{scheduleId}", "patch"),
    ("/campaigns/{campaignId}/schedules/{scheduleId}", "delete"),
    ("/campaigns/{campaignId}/schedules/{scheduleId}/run", "post"),
    ("/campaigns/{campaignId}/destinations", "get"),
    ("/campaigns/{campaignId}/destinations", "post"),
    ("/campaigns/{campaignId}/destinations/{destinationId}", "get"),
    ("/campaigns/{campaignId}/destinations/{destinationId}", "delete"),
    ("/campaigns/{campaignId}/destinations/{destinationId}/test", "post"),
    ("/campaigns/{campaignId}/exports/{exportId}/deliveries", "get"),
}


def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return dict(response.json())


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s ("#/components/...") to the object they name."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_document_is_valid_openapi_3_and_covers_every_route(client: TestClient) -> None:
    doc = document(client)
    validate(doc)  # raises on any violation of the OpenAPI 3.0 schema
    assert doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (route.path, method.lower())
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.include_in_schema
        # An HTTPEndpoint class (methods None) serves the methods it defines.
        for method in route.methods
        or {m.upper() for m in ("get", "post", "patch", "delete") if hasattr(route.endpoint, m)}
        if method != "HEAD"
    }
    assert served == documented
    assert ("/dev/token", "post") in documented  # the test app runs in dev mode
    for path, method in documented:
        operation = doc["paths"][path][method]
        assert operation["summary"] and operation["operationId"]
        statuses = set(operation["responses"])
        assert {"404", "500"} <= statuses
        assert ("401" in statuses) == ((path, method) in AUTHENTICATED)
        assert bool(operation.get("security")) == ((path, method) in AUTHENTICATED)
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in resolve(doc, response)["headers"], (path, method, status)
    post = doc["paths"]["/campaigns/{campaignId}/exports"]["post"]
    assert {"200", "201", "400", "401", "413", "429", "503"} <= set(post["responses"])
    assert "Retry-After" in doc["components"]["responses"]["TooManyRequests"]["headers"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }


def test_document_is_generated_from_the_code(client: TestClient, settings: Settings) -> None:
    doc = document(client)
    schemas = doc["components"]["schemas"]
    variants = schemas["ExportRequest"]["oneOf"]
    assert sorted(name for v in variants for name in v["properties"]["exportType"]["enum"]) == sorted(EXPORT_TYPES)
    dated = [v for v in variants if "dateKey" in v["properties"]]
    assert [v["properties"]["exportType"]["enum"] for v in dated] == [["codeWaves"]]
    assert all("dateKey" in v["required"] for v in dated)
    # SPEC §3 Formats: every format for single-file types, csv only for the ZIP and multi-file ones.
    for variant in variants:
        names = variant["properties"]["exportType"]["enum"]
        single_file = {EXPORT_TYPES[name].packaging == "csv" for name in names}
        assert len(single_file) == 1, names
        expected = ["csv", "csv.gz", "parquet", "xlsx"] if single_file == {True} else ["csv"]
        assert variant["properties"]["format"]["enum"] == expected, names
    assert schemas["ExportRecord"]["properties"]["format"]["enum"] == ["csv", "csv.gz", "parquet", "xlsx"]
    listing = doc["paths"]["/campaigns/{campaignId}/exports"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"] if "name" in p}
    assert params["limit"]["maximum"] == 100 and params["page"]["maximum"] == 1_000_000
    assert params["sort"]["enum"] == ["created", "status", "exportType"] and params["sortOrder"]["enum"] == [
        "asc",
        "desc",
    ]
    assert params["exportType"]["enum"] == sorted(EXPORT_TYPES)
    post = doc["paths"]["/campaigns/{campaignId}/exports"]["post"]
    # The POST body is the model's schema: its variants, not the looser schema of its fields.
    body = resolve(doc, post["requestBody"]["content"]["application/json"]["schema"])
    assert body["oneOf"] == export_request_variants() and set(body) == {"description", "oneOf"}
    assert set(schemas["Error"]["properties"]["error"]["required"]) == {"status", "message", "payload"}
    # Outside dev mode the dev endpoint is neither served nor described.
    with TestClient(create_app(settings.model_copy(update={"dev_mode": False}))) as prod:
        assert "/dev/token" not in document(prod)["paths"]


def test_schedule_schemas_say_what_parse_schedule_accepts(client: TestClient) -> None:
    schemas = document(client)["components"]["schemas"]
    for variant in schemas["ExportRequest"]["oneOf"]:
        takes_since = {
            EXPORT_TYPES[name].since_field is not None for name in variant["properties"]["exportType"]["enum"]
        }
        assert takes_since == {"since" in variant["properties"]}, variant
    variants = schemas["ScheduleCreate"]["oneOf"]
    assert sorted(name for v in variants for name in v["properties"]["exportType"]["enum"]) == sorted(EXPORT_TYPES)
    for variant in variants:
        assert "cron" in variant["required"] and "since" not in variant["properties"]
        names = variant["properties"]["exportType"]["enum"]
        offered = {EXPORT_TYPES[name].offers_incremental for name in names}
        assert len(offered) == 1, names
        assert ("enum" not in variant["properties"]["incremental"]) == offered.pop(), names
    assert set(schemas["SchedulePatch"]["properties"]) == {"cron", "timezone", "paused", "skipEmpty", "destinations"}
    assert set(schemas["ScheduleDetail"]["required"]) == {*schemas["Schedule"]["required"], "runs"}


def test_real_error_bodies_match_the_error_schema(client: TestClient) -> None:
    from jsonschema import validate as validate_json

    error_schema = document(client)["components"]["schemas"]["Error"]
    for response in (
        client.get("/campaigns/c/exports"),
        client.post("/campaigns/c/exports", content=b"{", headers={"Authorization": "Bearer x"}),
        client.get("/nope"),
    ):
        validate_json(response.json(), error_schema)


def test_docs_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        response = client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert "/openapi.json" in client.get("/docs/init.js").text


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        # The project installs it (make pytest runs this script); a bare `pytest` may still lack it.
        script = Path(__file__).resolve().parents[2] / "devstack" / "ensure_chromium.sh"
        subprocess.run(["sh", str(script)], check=True, timeout=600)
    return CHROMIUM


def test_docs_page_renders_every_operation_in_headless_chromium(live_api: LiveServer, tmp_path: Path) -> None:
    chromium = _chromium()
    assert shutil.which(chromium), chromium
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        f"{live_api.url}/docs",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    doc = httpx.get(f"{live_api.url}/openapi.json").json()
    assert "export-service" in dom  # the document's title, rendered by Swagger UI
    for path, operations in doc["paths"].items():
        assert f'data-path="{path}"' in dom, path
        for method in operations:
            assert f"opblock-{method}" in dom, (path, method)
