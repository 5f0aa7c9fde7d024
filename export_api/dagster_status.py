"""The Dagster run behind an export, read from the Dagster webserver's GraphQL API.

Over HTTP on purpose: importing dagster costs seconds and ~120 MB (DESIGN §1). Dagster
being down or slow must not break the API, so any failure degrades to
`{"id": ..., "status": null, "available": false}` and the record's own status stands.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

logger = logging.getLogger("export_api.dagster")

TIMEOUT_SECONDS = 1.0

RUN_STATUS_QUERY = """
query ExportRunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      status
      stepStats { stepKey status }
    }
  }
}
"""


def unavailable(run_id: str | None) -> dict[str, Any]:
    return {"id": run_id, "status": None, "available": False}


def http_client() -> httpx.AsyncClient:
    """One client per app; `trust_env=False` so a proxy meant for the internet never sits in the way."""
    return httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT_SECONDS), trust_env=False)


async def fetch_run(client: httpx.AsyncClient, graphql_url: str, run_id: str | None) -> dict[str, Any]:
    """`{"id", "status", "available", "stepsSucceeded", "stepsFailed", "steps"}` of one run."""
    if not run_id:
        return unavailable(None)
    try:
        response = await client.post(graphql_url, json={"query": RUN_STATUS_QUERY, "variables": {"runId": run_id}})
        response.raise_for_status()
        run = response.json()["data"]["runOrError"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.info("Dagster run status unavailable (%s)", type(exc).__name__)
        return unavailable(run_id)
    if not isinstance(run, dict) or run.get("__typename") != "Run":
        return unavailable(run_id)
    steps = [
        {"key": s.get("stepKey"), "status": s.get("status")} for s in run.get("stepStats") or [] if isinstance(s, dict)
    ]
    return {
        "id": run.get("runId", run_id),
        "status": run.get("status"),
        "available": True,
        "stepsSucceeded": sum(1 for s in steps if s["status"] == "SUCCESS"),
        "stepsFailed": sum(1 for s in steps if s["status"] == "FAILURE"),
        "steps": steps,
    }
