"""An export record as users read it: the API's GET and the webhook payloads render it the same way.

Dagster- and Starlette-free, so the webhook sensor builds the same JSON the API answers with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

# Storage details, not part of the record users see: the dedupe slot, the queue slot, a re-run's claim, the
# webhook outbox (export_core/records.py writes `notify` with each end state; the sensor drains it) and the
# destination outbox (`deliver`, written with FINISHED; GET .../deliveries shows the deliveries).
HIDDEN_FIELDS = ("_id", "active", "pendingSlot", "rerun", "notify", "deliver")


def iso_utc(value: datetime) -> str:
    """`2024-01-15T10:30:00.000Z`, the one date format of SPEC §3/§6."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)  # ObjectId, Decimal128, ... written by other tools must not turn a read into a 500


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    view = cast(dict[str, Any], to_json({k: v for k, v in record.items() if k not in HIDDEN_FIELDS}))
    view.setdefault("format", "csv")  # records from before formats (SPEC §3) were CSV
    if record.get("date", {}).get("deleted"):
        view["deleted"] = True  # CCPA (SPEC §7): its files are gone; `deletedBy` says who asked
    return view
