"""One export's plan: what its run decided once, at its start, and staged with its files.

The record as it was, the campaign, the type's registry entry, the bucket, the keys and file
names, the packaging and format, and where the files go. `resolve` is pure; the run saves the
plan as `plan.json` in the export's scratch directory, so a re-execution from failure reads the
same plan, and every step reads it instead of deciding again (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONOptions

from export_core.export_types import ExportType
from export_core.formats import CSV_CONTENT_TYPE, DEFAULT_FORMAT, FORMATS, with_extension
from export_core.keys import display_file_name, export_key, safe_key_part

PLAN_FILE = "plan.json"
# Extended JSON keeps the record's and campaign's dates (tz-aware) and ids as they were.
_JSON = JSONOptions(tz_aware=True, json_mode=json_util.JSONMode.CANONICAL)


class PlanError(ValueError):
    """The export cannot be planned: one plain sentence for the record (SPEC §4)."""


def staging_dir(data_dir: Path, export_id: str) -> Path:
    """An export's staging directory: kept until it FINISHED, so a re-execution resumes."""
    return data_dir / "staging" / safe_key_part(export_id)


def run_scratch_dir(data_dir: Path, run_id: str) -> Path:
    """A run's scratch directory (per-run scratch types, SPEC §5): gone when the run ends."""
    return data_dir / "tmp" / safe_key_part(run_id)


@dataclass(frozen=True)
class ExportPlan:
    """What every step of one export reads, decided once when its run starts."""

    record: dict[str, Any]  # as it was when the plan was made (with its preliminary count)
    campaign: dict[str, Any]
    export_type: str  # the registry entry's name (export_types.EXPORT_TYPES)
    bucket: str  # the configured bucket the files go to
    acl: str
    packaging: str  # csv (one file), zip, multi_csv
    format: str  # export_core/formats.py; csv for records without one
    content_type: str  # of every uploaded object
    campaign_name: str  # the campaign's own name (its id when it has none)
    key_prefix: str  # every key of the export starts with it (type/campaign/export/)
    key: str | None  # the object's key (csv, zip); multi_csv keys are per file
    download_name: str | None  # the file name a download saves under (csv, zip)
    scratch: str  # "export" (staged until FINISHED) or "run" (SPEC §5)
    work_dir: str

    @property
    def export_id(self) -> str:
        return str(self.record["_id"])

    @property
    def campaign_id(self) -> str:
        return str(self.record["campaignId"])

    @property
    def path(self) -> Path:
        return Path(self.work_dir) / PLAN_FILE

    def file_key(self, relative: str) -> str:
        """The key of one file of a multi_csv export (a type may key its files its own way)."""
        return self.key_prefix + relative

    def with_record(self, **fields: Any) -> ExportPlan:
        """The plan with fields added to its record (the preliminary count, counted at the start)."""
        return dataclasses.replace(self, record={**self.record, **fields})

    def to_json(self) -> str:
        return json_util.dumps(dataclasses.asdict(self), json_options=_JSON)

    @classmethod
    def from_json(cls, text: str) -> ExportPlan:
        return cls(**json_util.loads(text, json_options=_JSON))

    def save(self) -> None:
        """Stage the plan with the export's files (written whole, then renamed into place)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(self.to_json())
        partial.replace(self.path)


def load(work_dir: Path) -> ExportPlan | None:
    """The plan staged in `work_dir`, if any."""
    path = work_dir / PLAN_FILE
    return ExportPlan.from_json(path.read_text()) if path.is_file() else None


def _coverage_mark(record: Mapping[str, Any]) -> str:
    """What a partial export adds to its file name (SPEC §12): ` - incremental 2027-03-14 0600Z` for
    a schedule's incremental run (its tick), ` - since 2027-03-01 0000Z` for a `since` request."""
    schedule = record.get("schedule") or {}
    if record.get("incremental") and isinstance(schedule.get("scheduledFor"), datetime):
        return f" - incremental {_stamp(schedule['scheduledFor'])}"
    if isinstance(record.get("since"), datetime):
        return f" - since {_stamp(record['since'])}"
    return ""


def _stamp(at: datetime) -> str:
    utc = at.astimezone(UTC) if at.tzinfo else at
    return utc.strftime("%Y-%m-%d %H%MZ")


def resolve(
    record: Mapping[str, Any],
    campaign: Mapping[str, Any],
    export_type: ExportType,
    *,
    buckets: Mapping[str, str],
    data_dir: Path,
    run_id: str,
) -> ExportPlan:
    """The plan of `record`'s export; pure. `buckets`: registry bucket (exportsS3, ...) → configured name."""
    fmt_name = str(record.get("format") or DEFAULT_FORMAT)
    if not export_type.offers_format(fmt_name):
        raise PlanError(f"The format {fmt_name[:20]!r} is not offered for this export type.")
    fmt = FORMATS[fmt_name]
    if record.get("since") is not None and export_type.since_field is None:
        raise PlanError("This export type does not offer 'since': its rows have no creation date.")
    if record.get("incremental") and not export_type.offers_incremental:
        raise PlanError("This export type cannot be incremental.")
    export_id, campaign_id = str(record["_id"]), str(record["campaignId"])
    name = str(campaign.get("name") or record.get("campaignName") or campaign_id)
    template = with_extension(export_type.file_name, fmt)
    if export_type.offers_incremental:  # single-file types: the template ends with the format's extension
        template = template.removesuffix(fmt.extension) + _coverage_mark(record) + fmt.extension
    key_prefix = export_key(export_type.name, campaign_id, export_id, "")
    single = export_type.packaging != "multi_csv"
    content_type = {"zip": "application/zip", "multi_csv": CSV_CONTENT_TYPE}.get(export_type.packaging)
    work_dir = run_scratch_dir(data_dir, run_id) if export_type.scratch == "run" else staging_dir(data_dir, export_id)
    return ExportPlan(
        record=dict(record),
        campaign=dict(campaign),
        export_type=export_type.name,
        bucket=buckets[export_type.bucket],
        acl=export_type.acl,
        packaging=export_type.packaging,
        format=fmt.name,
        content_type=content_type or fmt.content_type,
        campaign_name=name,
        key_prefix=key_prefix,
        key=key_prefix + template.format(campaign=safe_key_part(name)) if single else None,
        download_name=display_file_name(template, name) if single else None,
        scratch=export_type.scratch,
        work_dir=str(work_dir),
    )
