"""Run one export through its real Dagster job, in process, against the test's servers."""

from __future__ import annotations

import csv
import io
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult
from pymongo.database import Database

from export_pipelines.domain.records import ExportStore
from export_pipelines.jobs import EXPORT_JOBS, partitions_name
from export_pipelines.resources import ExportServiceResource


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


def run_export(record: dict[str, Any], instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """Execute the export's job for its partition (= export id), as the sensor's run would."""
    instance = instance or DagsterInstance.ephemeral()
    export_type = record["exportType"]
    instance.add_dynamic_partitions(partitions_name(export_type), [record["_id"]])
    return EXPORT_JOBS[export_type].execute_in_process(
        partition_key=record["_id"],
        instance=instance,
        resources={"service": ExportServiceResource()},
        raise_on_error=False,
    )


def read_csv(body: bytes) -> list[dict[str, str]]:
    """Parse with the standard library's RFC 4180 reader, independent of how we wrote it."""
    text = body.decode("utf-8")
    assert not text.startswith("\ufeff"), "no BOM by default"
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_header(body: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
