"""What a campaign admin reads when an export fails: one plain sentence (SPEC §4), never a host,
a port, a library's name or a traceback. The detail goes to the logs and the Dagster run."""

from __future__ import annotations

from typing import Any

DATABASE_UNAVAILABLE = "The database was unavailable; the export can be re-run."
STORAGE_UNAVAILABLE = "Storage was unavailable; the export can be re-run."
UNEXPECTED = "The export failed unexpectedly; the export can be re-run."
RUN_FAILED = "The export's run stopped before it finished; the export can be re-run."
# Its worker process ended without a word (a crash, kill -9, power loss): found by stale_exports_sensor.
WORKER_LOST = "The export's worker stopped unexpectedly before it finished; the export can be re-run."


def plain_message(error: BaseException | None) -> str:
    """The sentence for an exception that ended a step; our own Failures already carry one."""
    description = getattr(error, "description", None)  # dagster.Failure, raised for bad data
    if isinstance(description, str) and description:
        return description
    for cause in _chain(error):
        module = type(cause).__module__
        if module.startswith(("pymongo", "bson")):
            return DATABASE_UNAVAILABLE
        if module.startswith(("botocore", "boto3", "s3transfer")):
            return STORAGE_UNAVAILABLE
    return UNEXPECTED


def expired_message(seconds: float) -> str:
    return f"The export ran longer than its maximum runtime ({seconds:.0f} seconds) and was stopped; it can be re-run."


def _chain(error: BaseException | None) -> list[Any]:
    chain: list[Any] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain
