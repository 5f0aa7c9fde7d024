"""Retention (EXPORT_RETENTION_DAYS): delete the files of exports that finished more than N days ago.

Dagster-free: the daily `export_retention_job` (export_pipelines/retention.py) calls
`apply_retention`. Age counts from `date.finished` — when the file was written, which for a
re-run is later than `date.created` — so a file is always kept the full N days.

Only FINISHED exports have files; records of any other status are never touched. The objects
go and the records are marked exactly as a CCPA deletion marks them (export_core/ccpa.py does the
work): `date.deleted`, `deletedBy: "retention"`, `deletion.reason: "retention"`. A record a CCPA
deletion has claimed is left to CCPA. When S3 fails midway, the records say which exports
went and which did not (`deletion.status` complete / failed), and the next run finishes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo.database import Database

from export_core.ccpa import CcpaDeletion
from export_core.records import FINISHED, utcnow

logger = logging.getLogger("export_pipelines.retention")

REASON = "retention"
# One run deletes at most this many exports; the next daily run continues where it stopped.
MAX_PER_RUN = 10_000


@dataclass(frozen=True)
class RetentionResult:
    """What one run did; `cutoff` is None when retention is off (EXPORT_RETENTION_DAYS unset)."""

    cutoff: datetime | None
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return not self.failed

    def message(self) -> str:
        if self.cutoff is None:
            return "Retention is off (EXPORT_RETENTION_DAYS is unset): no export files deleted."
        cutoff = self.cutoff.isoformat()
        text = f"Retention: deleted the files of {len(self.deleted)} export(s) finished before {cutoff}."
        if self.failed:
            text += f" {len(self.failed)} could not be deleted ({self.error}); the next run retries them."
        return text


def retention_filter(cutoff: datetime) -> dict[str, Any]:
    """FINISHED before the cutoff, files not yet deleted, and not claimed by a CCPA deletion."""
    return {
        "status": FINISHED,
        "date.finished": {"$lt": cutoff},
        "date.deleted": {"$exists": False},
        "$or": [{"deletion": {"$exists": False}}, {"deletion.reason": REASON}],
    }


class RetentionPolicy(Protocol):
    """What retention needs: the days (None: off) and the logical → configured bucket names (Settings has both)."""

    @property
    def export_retention_days(self) -> int | None: ...

    @property
    def buckets(self) -> Mapping[str, str]: ...


def apply_retention(
    db: Database, s3: Any, settings: RetentionPolicy, *, now: datetime | None = None, limit: int = MAX_PER_RUN
) -> RetentionResult:
    """Delete every object of the exports older than the retention and mark their records; safe to repeat."""
    if settings.export_retention_days is None:
        return RetentionResult(cutoff=None)
    cutoff = (now or utcnow()) - timedelta(days=settings.export_retention_days)
    deletion = CcpaDeletion(db, s3, settings.buckets)
    records = list(deletion.store.collection.find(retention_filter(cutoff)).sort("date.finished", 1).limit(limit))
    if not records:
        return RetentionResult(cutoff=cutoff)
    run_id = f"retention-{uuid.uuid4().hex}"
    deletion.store.begin_deletion(
        [str(r["_id"]) for r in records], by=REASON, audit_id=run_id, source=REASON, reason=REASON
    )
    failed: list[dict[str, Any]] = []
    deleted, failed_now, error = deletion.delete_targets(deletion.targets(records, failed), by=REASON, audit_id=run_id)
    failed += failed_now
    result = RetentionResult(
        cutoff=cutoff,
        deleted=[str(d["id"]) for d in deleted],
        failed=[str(f["id"]) for f in failed],
        error=error or (str(failed[0].get("error")) if failed else None),
    )
    logger.info("%s (run %s)", result.message(), run_id)
    return result
