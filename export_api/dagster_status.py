"""The Dagster run behind an export, read from the Dagster webserver's GraphQL API.

Over HTTP on purpose: importing dagster costs seconds and ~120 MB (DESIGN §1). Dagster
being down or slow must not break the API, so any failure degrades to
`{"id": ..., "status": null, "available": false}` and the record's own status stands.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import httpx

logger = logging.getLogger("export_api.dagster")

TIMEOUT_SECONDS = 1.0
ENDED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})  # a run in one of these never changes
ENDED_CACHE_SIZE = 10_000
RECENT_SECONDS = 5.0  # an ended export whose run Dagster cannot describe is asked again after this

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


class RunStatusReader:
    """`fetch_run` with memory: an ended run's answer is kept, so GETs of ended exports stay cheap.

    A re-run is a new Dagster run with a new id (the record's `runId` changes), so a kept answer
    is never stale. For an ended export whose run Dagster could not describe (unreachable, run
    deleted), the answer is kept for RECENT_SECONDS so a burst of GETs does not wait on Dagster.
    Live exports are always asked: their run's steps are what a user polls for.
    """

    def __init__(self, client: httpx.AsyncClient, graphql_url: str) -> None:
        self.client, self.graphql_url = client, graphql_url
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent: dict[str, tuple[float, dict[str, Any]]] = {}

    async def read(self, run_id: str | None, *, export_ended: bool) -> dict[str, Any]:
        if not run_id:
            return unavailable(None)
        if run_id in self._ended:
            self._ended.move_to_end(run_id)
            return self._ended[run_id]
        now = time.monotonic()
        if export_ended and run_id in self._recent:
            at, answer = self._recent[run_id]
            if now - at < RECENT_SECONDS:
                return answer
        answer = await fetch_run(self.client, self.graphql_url, run_id)
        if answer.get("status") in ENDED_RUN_STATUSES:
            self._ended[run_id] = answer
            self._recent.pop(run_id, None)
            while len(self._ended) > ENDED_CACHE_SIZE:
                self._ended.popitem(last=False)
        elif export_ended:
            if len(self._recent) >= ENDED_CACHE_SIZE:
                self._recent.clear()
            self._recent[run_id] = (now, answer)
        return answer
