"""Re-run failed exports through the Dagster webserver: one backfill per export type.

`python -m export_pipelines.rerun [--export-type T] [--since 2024-01-01T00:00:00Z] [--dry-run]`
selects FAILED/EXPIRED exports from the records and asks Dagster (GraphQL
`launchPartitionBackfill`) to run their partitions again; the queue still runs them one at a
time and each record goes FAILED/EXPIRED → TRIGGERED → FINISHED. The same can be done by
hand in the UI (job → Partitions → select → Launch backfill). Dagster-free on purpose.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import httpx

from export_core.clients import mongo_client
from export_core.records import RERUNNABLE
from export_core.settings import Settings

LOCATION_NAME = "export_pipelines"  # location_name in workspace.yaml
REPOSITORY_NAME = "__repository__"

BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
  }
}
"""


def failed_exports(settings: Settings, export_type: str | None, since: datetime | None) -> dict[str, list[str]]:
    """Ids of FAILED/EXPIRED exports, grouped by export type, oldest first."""
    query: dict[str, Any] = {"status": {"$in": list(RERUNNABLE)}}
    if export_type:
        query["exportType"] = export_type
    if since:
        query["date.created"] = {"$gte": since}
    with mongo_client(settings) as client:
        cursor = client[settings.mongodb_db]["exports"].find(query, {"exportType": 1}).sort("date.created", 1)
        grouped: dict[str, list[str]] = {}
        for doc in cursor:
            grouped.setdefault(doc["exportType"], []).append(str(doc["_id"]))
    return grouped


def launch_backfill(graphql_url: str, export_type: str, export_ids: list[str]) -> str:
    """One backfill of the export type's job over these export ids (partitions); returns its id."""
    params = {
        "selector": {
            "partitionSetName": f"{export_type}_export_job_partition_set",
            "repositorySelector": {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME},
        },
        "partitionNames": export_ids,
        "fromFailure": False,
    }
    response = httpx.post(graphql_url, json={"query": BACKFILL_MUTATION, "variables": {"params": params}}, timeout=30)
    response.raise_for_status()
    result = response.json()["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill of {export_type} refused: {result}")
    return str(result["backfillId"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--export-type", help="only this export type (default: all types)")
    parser.add_argument("--since", type=datetime.fromisoformat, help="only exports created at or after (ISO-8601)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be re-run")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    grouped = failed_exports(settings, args.export_type, args.since)
    if not grouped:
        print("no FAILED or EXPIRED exports match")
        return 0
    for export_type, ids in grouped.items():
        if args.dry_run:
            print(f"{export_type}: would re-run {len(ids)} export(s): {' '.join(ids)}")
        else:
            backfill = launch_backfill(settings.dagster_graphql_url, export_type, ids)
            print(f"{export_type}: backfill {backfill} re-runs {len(ids)} export(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
