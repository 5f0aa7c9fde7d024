"""Checks that requests of several resources make: a date-time field, the queue's room, the campaign's
destinations, the export named in the path (and its download links)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from export_api.errors import ApiError
from export_api.state import ApiState
from export_core.destination_store import DestinationStore
from export_core.export_types import EXPORT_TYPES
from export_core.records import FINISHED, TooManyPending

RETRY_AFTER_SECONDS = 60  # PENDING exports drain one run at a time: minutes, not milliseconds
MAX_DATE_TIME_LENGTH = 64


def parse_date_time(value: object, field: str) -> datetime:
    """An ISO 8601 date-time (with an offset or `Z`; without one it is UTC) as an aware UTC datetime;
    400 naming `field` for anything else (a date alone, too, so midnight of which zone is never guessed)."""
    refused = ApiError(400, f"'{field}' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'.", field)
    if not isinstance(value, str) or len(value) > MAX_DATE_TIME_LENGTH or not any(t in value for t in "Tt "):
        raise refused
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 or after 9999 once in UTC
        raise refused from None


def queue_full(exc: TooManyPending) -> ApiError:
    """The 429 of a request that would queue past MAX_PENDING_PER_CAMPAIGN."""
    return ApiError(
        429,
        f"This campaign already has {exc.limit} queued exports; please wait for some to start.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def refuse_unknown_destinations(db: Database, campaign_id: str, ids: tuple[str, ...] | list[str]) -> None:
    """400 naming `destinations` when an id is not one of the campaign's destinations (SPEC §13)."""
    unknown = DestinationStore(db).unknown_ids(campaign_id, ids) if ids else []
    if unknown:
        raise ApiError(400, f"'{unknown[0][:100]}' is not a destination of this campaign.", "destinations")


def load_export(state: ApiState, campaign_id: str, export_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    record = state.store.get(export_id)
    # Another campaign's export is "not found": its existence is not the caller's business.
    if record is None or record.get("campaignId") != campaign_id:
        raise ApiError(404, "Export not found.", export_id[:100])
    return record, download_links(state, record)


def download_links(state: ApiState, record: dict[str, Any]) -> dict[str, Any]:
    """`path` (one key) or `paths` (several keys) of signed GET URLs for a downloadable record."""
    key = record.get("key")
    export_type = EXPORT_TYPES.get(record.get("exportType", ""))
    # A record claimed by a CCPA deletion (`deletion`, even before `date.deleted`) offers no download.
    deleted = record.get("date", {}).get("deleted") or record.get("deletion")
    if record.get("status") != FINISHED or deleted or not key or export_type is None:
        return {}
    # The bucket the export went to, as its record says (its plan's); a record from before
    # `meta.bucket` existed falls back to the type's configured bucket.
    bucket = str((record.get("meta") or {}).get("bucket") or state.settings.bucket_for(export_type.bucket))
    if isinstance(key, list):
        return {"paths": [{"key": k, "url": state.signer.url(bucket, k)} for k in key]}
    return {"path": state.signer.url(bucket, key)}
