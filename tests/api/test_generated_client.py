"""A client generated from the running API's /openapi.json (openapi-python-client) drives the API: it
requests an export, lists and reads it, gets a refusal as the `Error` model, and saves a schedule. The
generator refuses or drops what it cannot type, so this is the document's own end-to-end check."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.api.conftest import CAMPAIGN, LiveServer

GENERATOR = str(Path(sys.executable).parent / "openapi-python-client")
PACKAGE = "export_service_client"


@pytest.fixture
def generated(live_api: LiveServer, tmp_path: Path) -> Iterator[ModuleType]:
    """The client package generated into tmp_path and imported (and forgotten afterwards)."""
    done = subprocess.run(
        [GENERATOR, "generate", "--url", f"{live_api.url}/openapi.json", "--output-path", str(tmp_path / PACKAGE)]
        + ["--meta", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    # Every schema and response made it into the client: the generator names what it had to leave out.
    assert "Unable to process schema" not in said and "will be omitted" not in said, said
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def _body_for(models: Any, prefix: str, export_type: str, **fields: str) -> Any:
    """The generated body variant (`{prefix}Type{n}`) whose exportType enum offers `export_type`."""
    for n in range(16):
        variant = getattr(models, f"{prefix}Type{n}", None)
        if variant is None:
            break
        enums: dict[str, type[Enum]] = {
            "export_type": getattr(models, f"{prefix}Type{n}ExportType"),
            "format_": getattr(models, f"{prefix}Type{n}Format"),
        }
        if export_type in {e.value for e in enums["export_type"]}:
            values = {k: enums[k](v) if k in enums else v for k, v in {"export_type": export_type, **fields}.items()}
            return variant(**values)
    raise AssertionError(f"no {prefix} variant offers {export_type}")


def test_a_generated_client_requests_lists_and_reads_an_export(
    generated: ModuleType, live_api: LiveServer, token: str
) -> None:
    models = _module(generated, "models")
    client = _module(generated, "client").AuthenticatedClient(base_url=live_api.url, token=token)
    create_export = _module(generated, "api.exports.create_export")

    created = create_export.sync_detailed(
        CAMPAIGN, client=client, body=_body_for(models, "ExportRequest", "entries", format_="xlsx")
    )
    assert created.status_code == 201, created.content
    record = created.parsed
    assert isinstance(record, models.ExportRecord)
    assert (record.campaign_id, record.status.value, record.format_.value) == (CAMPAIGN, "PENDING", "xlsx")

    page = _module(generated, "api.exports.list_exports").sync(CAMPAIGN, client=client)
    assert isinstance(page, models.ExportList) and [e.id for e in page.exports] == [record.id]
    shown = _module(generated, "api.exports.get_export").sync(CAMPAIGN, record.id, client=client)
    assert isinstance(shown, models.ExportDetail) and shown.export_type == "entries"

    # A refusal comes back typed as the Error model, with the sentence the API sends.
    refused = create_export.sync_detailed(
        "no-such-campaign", client=client, body=_body_for(models, "ExportRequest", "entries")
    )
    assert refused.status_code in (400, 401)
    assert isinstance(refused.parsed, models.Error) and refused.parsed.error.status == refused.status_code

    saved = _module(generated, "api.schedules.create_schedule").sync_detailed(
        CAMPAIGN, client=client, body=_body_for(models, "ScheduleCreate", "entries", cron="0 6 * * *")
    )
    assert saved.status_code == 201, saved.content
    assert isinstance(saved.parsed, models.Schedule) and saved.parsed.cron == "0 6 * * *"
    assert saved.parsed.next_runs, "the answer lists the next runs"
