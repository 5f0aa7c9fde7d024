"""Launching the run of a re-run (POST .../rerun) through the Dagster webserver's GraphQL API.

Over HTTP, like dagster_status.py: the API never imports dagster. An export whose last run
Dagster still knows is re-executed from that run (FROM_FAILURE: finished steps are not done
again; ALL_STEPS when that run succeeded while its record did not). An export with no run to
re-execute (failed before its run started, or Dagster's storage was reset) gets a fresh run of
its type's job for its partition, as the pending-exports sensor would launch it. Either way
the run goes through the one-at-a-time queue.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

logger = logging.getLogger("export_api.dagster")

LOCATION_NAME = "export_pipelines"  # location_name in workspace.yaml
REPOSITORY_NAME = "__repository__"
LAUNCH_TIMEOUT_SECONDS = 30.0  # a launch asks the code server for an execution plan: seconds, not ms
# The run tags the engine reads (export_pipelines/jobs.py); repeated here so the API needs no dagster.
PARTITION_TAG = "dagster/partition"
CAMPAIGN_TAG = "export-service/campaign-id"
REQUEST_ID_TAG = "export-service/request-id"
SCHEDULE_ID_TAG = "export-service/schedule-id"
REEXECUTABLE = frozenset({"FAILURE", "CANCELED"})  # what FROM_FAILURE accepts as a parent run
ENDED = REEXECUTABLE | {"SUCCESS"}

RUN_QUERY = """
query RerunParent($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status }
  }
}
"""

REEXECUTE = """
mutation Rerun($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
  }
}
"""

LAUNCH = """
mutation RerunFresh($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
  }
}
"""


class LaunchFailed(Exception):
    """No run was launched: Dagster could not be reached or refused (the detail is logged)."""


class PreviousRunActive(Exception):
    """The export's last run has not ended yet (its record ended first); it cannot be re-executed yet."""


async def _graphql(client: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any], field: str) -> Any:
    """`data.<field>` of one GraphQL call; LaunchFailed on any transport, HTTP or GraphQL error."""
    try:
        response = await client.post(
            url, json={"query": query, "variables": variables}, timeout=httpx.Timeout(LAUNCH_TIMEOUT_SECONDS)
        )
        response.raise_for_status()
        answer = response.json()["data"][field]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.warning("Dagster GraphQL %s failed (%s)", field, type(exc).__name__)
        raise LaunchFailed(field) from None
    if not isinstance(answer, dict) or "__typename" not in answer:
        logger.warning("Dagster GraphQL %s answered without a result", field)
        raise LaunchFailed(field)
    return answer


def _launched(answer: dict[str, Any], field: str) -> str:
    if answer["__typename"] != "LaunchRunSuccess":
        logger.warning("Dagster refused %s (%s)", field, answer["__typename"])
        raise LaunchFailed(field)
    return str(answer["run"]["runId"])


async def parent_run_status(client: httpx.AsyncClient, url: str, run_id: str | None) -> str | None:
    """The Dagster status of the export's last run; None when there is none or Dagster no longer has it."""
    if not run_id:
        return None
    answer = await _graphql(client, url, RUN_QUERY, {"runId": run_id}, "runOrError")
    if answer["__typename"] == "RunNotFoundError":
        return None
    if answer["__typename"] != "Run":
        logger.warning("Dagster could not describe run %s (%s)", run_id, answer["__typename"])
        raise LaunchFailed("runOrError")
    return str(answer["status"])


async def _reexecute(client: httpx.AsyncClient, url: str, parent: str, status: str) -> str:
    """Re-execute the ended run `parent`: from failure when it failed or was cancelled, else every step.

    FROM_FAILURE refuses a failed run none of whose steps failed (it ended around them): every step, then.
    """
    if status in REEXECUTABLE:
        params = {"parentRunId": parent, "strategy": "FROM_FAILURE"}
        answer = await _graphql(client, url, REEXECUTE, {"params": params}, "launchRunReexecution")
        if answer["__typename"] == "LaunchRunSuccess":
            return str(answer["run"]["runId"])
        logger.info("Dagster refused to re-execute run %s from failure (%s)", parent, answer["__typename"])
    params = {"parentRunId": parent, "strategy": "ALL_STEPS"}
    answer = await _graphql(client, url, REEXECUTE, {"params": params}, "launchRunReexecution")
    return _launched(answer, "launchRunReexecution")


async def launch_rerun(client: httpx.AsyncClient, url: str, record: dict[str, Any]) -> str:
    """Launch the run that re-runs `record` (as it was before its claim); returns the new run's id."""
    export_id, export_type = str(record["_id"]), str(record["exportType"])
    parent = record.get("runId")
    status = await parent_run_status(client, url, parent)
    if status is not None and status not in ENDED:
        raise PreviousRunActive(status)
    if status is not None:
        return await _reexecute(client, url, str(parent), status)
    tags = [{"key": PARTITION_TAG, "value": export_id}, {"key": CAMPAIGN_TAG, "value": str(record["campaignId"])}]
    if record.get("requestId"):
        tags.append({"key": REQUEST_ID_TAG, "value": str(record["requestId"])})
    if record.get("schedule"):
        tags.append({"key": SCHEDULE_ID_TAG, "value": str(record["schedule"]["id"])})
    params = {
        "selector": {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": REPOSITORY_NAME,
            "jobName": f"{export_type}_export_job",
        },
        "runConfigData": {},
        "executionMetadata": {"tags": tags},
    }
    return _launched(await _graphql(client, url, LAUNCH, {"params": params}, "launchRun"), "launchRun")
