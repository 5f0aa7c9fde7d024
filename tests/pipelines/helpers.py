"""Run one export through its real Dagster job, in process, against the test's servers."""

from __future__ import annotations

import csv
import io
from functools import cache
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, JobDefinition
from pymongo.database import Database

from export_core.records import ExportStore
from export_core.settings import Settings
from export_pipelines.jobs import build_export_jobs, partitions_name
from export_pipelines.resources import ExportFilesResource, ExportRunResource, MongoResource, S3Resource
from export_pipelines.stages import Workspace

TEST_TIMEOUT_MILLIS = 3_600_000
TEST_RETRY_DELAY = 0.05  # the retry tests wait 0.05, 0.1, 0.2 s instead of production's 1, 2, 4 s


@cache
def export_jobs() -> dict[str, JobDefinition]:
    return build_export_jobs(TEST_TIMEOUT_MILLIS, retry_delay=TEST_RETRY_DELAY)


def request_export(db: Database, campaign_id: str, export_type: str, **kwargs: Any) -> dict[str, Any]:
    store = ExportStore(db)
    store.ensure_indexes()
    campaign = db["campaigns"].find_one({"_id": campaign_id}) or {}
    return store.create(
        campaign_id=campaign_id,
        campaign_name=str(campaign.get("name", "")),
        export_type=export_type,
        requester_user_id="tester",
        **kwargs,
    ).record


def export_resources(
    settings: Settings,
    *,
    mongo_uri: str | None = None,
    s3_endpoint_url: str | None = None,
    max_rows: int | None = None,
    sfmc_config: str | None = None,
    sfmc_bucket: str | None = None,
    object_acl: str | None = None,
    sse: str | None = None,
) -> dict[str, Any]:
    """The resources of an export run, configured for the test's servers (what definitions.py does from env)."""
    mongo = MongoResource(uri=mongo_uri or settings.mongodb_uri, database=settings.mongodb_db)
    s3 = S3Resource(
        endpoint_url=s3_endpoint_url or settings.s3_endpoint_url,
        exports_bucket=settings.exports_bucket,
        scoring_bucket=settings.scoring_bucket,
        vf_scoring_bucket=settings.vf_scoring_bucket,
        sfmc_bucket=sfmc_bucket or settings.sfmc_bucket,
        object_acl=object_acl or settings.s3_object_acl,
        sse=sse or settings.s3_sse,
        sse_kms_key_id=settings.s3_sse_kms_key_id,
    )
    files = ExportFilesResource(
        data_dir=str(settings.data_dir),
        max_rows_per_exported_file=max_rows or settings.max_rows_per_exported_file,
        sfmc_config=sfmc_config or settings.sfmc_config,
        timeout_millis=settings.timeout_millis,
    )
    return {
        "mongo": mongo,
        "s3": s3,
        "files": files,
        "export": ExportRunResource(mongo=mongo, s3=s3, files=files, retry_delay_seconds=TEST_RETRY_DELAY),
    }


def workspace(settings: Settings) -> Workspace:
    """What a run's `files` resource gives the stages, for the test's settings."""
    return Workspace(
        data_dir=settings.data_dir,
        buckets=settings.buckets,
        max_rows_per_file=settings.max_rows_per_exported_file,
        sfmc_config=settings.sfmc_config,
        timeout_millis=settings.timeout_millis,
    )


def run_export(
    record: dict[str, Any], instance: DagsterInstance | None = None, **resource_options: Any
) -> ExecuteInProcessResult:
    """Execute the export's job for its partition (= export id), as the sensor's run would."""
    instance = instance or DagsterInstance.ephemeral()
    export_type = record["exportType"]
    instance.add_dynamic_partitions(partitions_name(export_type), [record["_id"]])
    return export_jobs()[export_type].execute_in_process(
        partition_key=record["_id"],
        instance=instance,
        resources=export_resources(Settings.from_env(), **resource_options),
        raise_on_error=False,
    )


def read_csv(body: bytes) -> list[dict[str, str]]:
    """Parse with the standard library's RFC 4180 reader, independent of how we wrote it."""
    text = body.decode("utf-8")
    assert not text.startswith("\ufeff"), "no BOM by default"
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_header(body: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
