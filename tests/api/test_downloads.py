"""Download links of exports made by their real Dagster jobs, fetched over HTTP from the local S3 server.

A link must be SigV4 (S3 refuses SigV2 on new buckets) and the file must save under the campaign's
own name: `Content-Disposition` with the name, accents and emoji included, in `filename*`.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httpx
import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from devstack.seed import seed_campaign
from export_api.app import create_app
from export_core.records import FINISHED, ExportStore
from export_core.settings import Settings
from tests.api.conftest import TokenFactory
from tests.pipelines.helpers import run_export

CAMPAIGN_ID = "bey-2025"
CAMPAIGN_NAME = "Beyoncé Tour 🎸"
DISPOSITION = re.compile(r"attachment; filename=\"([ !#-\[\]-~]+)\"; filename\*=UTF-8''([A-Za-z0-9!#$&+.^_`|~%-]+)")


@pytest.fixture
def beyonce(db: Database) -> None:
    seed_campaign(db, campaign_id=CAMPAIGN_ID, n_entries=300, seed=3, campaign_name=CAMPAIGN_NAME)


@pytest.fixture
def auth(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(campaigns={CAMPAIGN_ID: ['REPORT']})}"}


def finished_export(client: TestClient, auth: dict[str, str], db: Database, export_type: str) -> dict[str, Any]:
    """POST the export, run its job as the sensor's run would, then GET it back through the API."""
    exports = f"/campaigns/{CAMPAIGN_ID}/exports"
    created = client.post(exports, json={"exportType": export_type}, headers=auth)
    assert created.status_code == 201, created.text
    record = ExportStore(db).get(created.json()["id"])
    assert record is not None and run_export(record).success
    body = client.get(f"{exports}/{record['_id']}", headers=auth).json()
    assert body["status"] == FINISHED, body
    return dict(body)


def download(url: str) -> tuple[httpx.Response, str]:
    """GET a link as a browser would; returns the response and the name `filename*` gives the file."""
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "AWSAccessKeyId=" not in url
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    match = DISPOSITION.fullmatch(response.headers["content-disposition"])
    assert match, response.headers["content-disposition"]
    return response, urllib.parse.unquote(match.group(2), errors="strict")


@pytest.mark.usefixtures("beyonce")
def test_a_finished_export_downloads_under_the_campaigns_own_name(
    client: TestClient, auth: dict[str, str], db: Database, s3: Any, settings: Any
) -> None:
    body = finished_export(client, auth, db, "entries")
    response, name = download(body["path"])
    assert name == "Beyoncé Tour 🎸 - Entries.csv"
    assert response.content == s3.get_object(Bucket=settings.exports_bucket, Key=body["key"])["Body"].read()
    assert response.content.startswith(b"userId,") and body["count"] == 300
    assert body["key"].endswith("/Beyonc_ Tour _ - Entries.csv"), "the key stays key-safe"
    assert response.headers["content-type"].startswith("text/csv")


@pytest.mark.usefixtures("beyonce")
def test_a_zip_export_keeps_its_zip_name(client: TestClient, auth: dict[str, str], db: Database) -> None:
    body = finished_export(client, auth, db, "reminderEmailSample")
    response, name = download(body["path"])
    assert name == "Combined - Beyoncé Tour 🎸 ASU - Reminder Email Data (Sample).zip"
    assert response.content.startswith(b"PK\x03\x04") and response.headers["content-type"] == "application/zip"


@pytest.mark.usefixtures("beyonce")
def test_each_file_of_a_multi_file_export_downloads_under_its_own_name(
    client: TestClient, auth: dict[str, str], db: Database, s3: Any, settings: Any
) -> None:
    body = finished_export(client, auth, db, "autoReminderEmail")
    assert "path" not in body and len(body["paths"]) >= 2
    names = []
    for entry in body["paths"]:
        response, name = download(entry["url"])
        assert response.content == s3.get_object(Bucket=settings.sfmc_bucket, Key=entry["key"])["Body"].read()
        region = entry["key"].rsplit("_", 2)[1]
        assert name == f"DM_ArtistPresale_V03_Beyoncé Tour 🎸_{region}_{body['id']}.csv"
        names.append(name)
    assert len(set(names)) == len(names), "each file its own name"


@pytest.mark.usefixtures("beyonce")
def test_a_download_link_uses_the_bucket_recorded_on_the_export(
    client: TestClient, auth: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exports bucket is configured anew after the export FINISHED: its link still points where it went."""
    body = finished_export(client, auth, db, "entries")
    record = ExportStore(db).get(body["id"])
    assert record is not None
    monkeypatch.setenv("EXPORTS_S3_BUCKET", "exports-configured-later")
    with TestClient(create_app(Settings.from_env())) as later:
        again = later.get(f"/campaigns/{CAMPAIGN_ID}/exports/{body['id']}", headers=auth).json()
    assert f"/{record['meta']['bucket']}/" in again["path"] and "exports-configured-later" not in again["path"]
    response, name = download(again["path"])
    assert name == "Beyoncé Tour 🎸 - Entries.csv" and response.content.startswith(b"userId,")
