"""The stages every export goes through, free of Dagster so they can be tested directly.

extract (type module) → transform (type module + generic cell formatting, CSV parts)
→ package (one CSV, a ZIP, or several CSVs) → upload (S3, bucket and ACL of the type)
→ finish (record FINISHED). Stages pass files in a staging directory keyed by export id,
which survives a failed run so a re-execution from failure can pick up where it stopped.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
from pymongo.database import Database

from export_pipelines.domain.csv_format import format_cells, header_line, write_csv
from export_pipelines.domain.export_types import EXPORT_TYPES, ExportType
from export_pipelines.domain.keys import export_key, safe_key_part
from export_pipelines.domain.membership import MembershipStore
from export_pipelines.domain.settings import Settings
from export_pipelines.domain.storage import UploadedObject, upload_file
from export_pipelines.exports.base import ExportContext, PermanentExportError

FILE_COLUMN = "__file"  # optional column of a transformed frame: which output file a row goes to
SINGLE_FILE = "data"


@dataclass(frozen=True)
class Artifact:
    path: Path
    key: str


def type_module(export_type: ExportType) -> ModuleType:
    return importlib.import_module(f"export_pipelines.exports.{export_type.module}")


def staging_dir(settings: Settings, export_id: str) -> Path:
    return settings.data_dir / "staging" / safe_key_part(export_id)


# Types whose module sets PER_RUN_SCRATCH = True (the reminder e-mails, SPEC §5) keep their
# scratch in a directory of the run instead, removed when the run ends, successful or not
# (finish_export on success, the job's failure hook otherwise). A re-execution from failure
# starts with an empty directory, so each stage below redoes the earlier ones it finds missing.
def run_scratch_dir(settings: Settings, run_id: str) -> Path:
    return settings.data_dir / "tmp" / safe_key_part(run_id)


def uses_run_scratch(export_type: ExportType) -> bool:
    return bool(getattr(type_module(export_type), "PER_RUN_SCRATCH", False))


def discard_run_scratch(settings: Settings, run_id: str) -> None:
    shutil.rmtree(run_scratch_dir(settings, run_id), ignore_errors=True)


def _sweep_stale_run_scratch(settings: Settings) -> None:
    """Remove directories left by runs that were killed outright (no hook ran); none can be alive."""
    cutoff = time.time() - 2 * settings.timeout_millis / 1000
    for stale in (settings.data_dir / "tmp").glob("*"):
        with suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)


def _lost(ctx: ExportContext, path: Path) -> bool:
    """A per-run stage input that is not there: this run re-executes a failed run's later step."""
    if path.exists() or not uses_run_scratch(ctx.export_type):
        return False
    ctx.log.info(f"{path.name} is not in this run's scratch directory: redoing the earlier stages")
    return True


def build_context(
    record: dict[str, Any], db: Database, s3: Any, settings: Settings, log: Any, run_id: str | None = None
) -> ExportContext:
    """Everything a stage needs about one export; the campaign must still exist."""
    export_type = EXPORT_TYPES.get(record.get("exportType", ""))
    if export_type is None:
        raise PermanentExportError(f"Invalid export type: {record.get('exportType')!r}")
    campaign = db["campaigns"].find_one({"_id": record["campaignId"]})
    if campaign is None:
        raise PermanentExportError(f"campaign {record['campaignId']!r} not found")
    work_dir = staging_dir(settings, str(record["_id"]))
    if run_id is not None and uses_run_scratch(export_type):
        work_dir = run_scratch_dir(settings, run_id)
        if not work_dir.exists():
            _sweep_stale_run_scratch(settings)
    return ExportContext(
        record=record,
        campaign=campaign,
        export_type=export_type,
        db=db,
        s3=s3,
        settings=settings,
        work_dir=work_dir,
        log=log,
    )


def preliminary_count(ctx: ExportContext) -> int | None:
    """Entries of the campaign, for progress display; None where it means nothing."""
    if not ctx.export_type.preliminary_count:
        return None
    # count_documents, not the `count` command: on the local server `count` scans the whole
    # collection (39 s for a 2k-entry campaign beside 1.3M other entries), the aggregation uses
    # the campaign index (bench, docs/performance.md).
    return ctx.db["entries"].count_documents({"campaignId": ctx.campaign_id})


def extract(ctx: ExportContext) -> None:
    shutil.rmtree(ctx.work_dir / "extract", ignore_errors=True)  # a re-run starts clean
    type_module(ctx.export_type).extract(ctx)


def transform(ctx: ExportContext) -> dict[str, int]:
    """Write the type's rows as formatted CSV files under out/; returns rows per file."""
    if _lost(ctx, ctx.work_dir / "extract"):
        extract(ctx)
    out_dir = ctx.work_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    columns = ctx.export_type.columns
    limit = ctx.settings.max_rows_per_exported_file if ctx.export_type.segment_rows else None
    writer = _SegmentedWriter(out_dir, columns, limit)
    members = MembershipStore(ctx.db)
    members.ensure_indexes()
    members.reset(ctx.export_id)
    member_column = ctx.export_type.member_column
    for frame in type_module(ctx.export_type).transform(ctx):
        if frame.height == 0:
            continue
        if member_column is not None:
            members.add(ctx.export_id, frame.get_column(member_column).cast(pl.String).to_list())
        if FILE_COLUMN in frame.columns:
            for (name,), group in frame.group_by(FILE_COLUMN, maintain_order=True):
                writer.write(str(name), format_cells(group, columns))
        else:
            writer.write(SINGLE_FILE, format_cells(frame, columns))
    if ctx.export_type.packaging in ("csv", "zip") and not writer.rows:  # empty: a header-only file
        writer.write(SINGLE_FILE, pl.DataFrame(schema=dict.fromkeys(columns, pl.String)))
    (ctx.work_dir / "manifest.json").write_text(json.dumps(writer.rows))
    return writer.rows


class _SegmentedWriter:
    """Appends rows to named CSV files, each with its header, rolling over at `limit` rows."""

    def __init__(self, out_dir: Path, columns: tuple[str, ...], limit: int | None) -> None:
        self.out_dir, self.columns, self.limit = out_dir, columns, limit
        self.rows: dict[str, int] = {}  # relative file path → rows
        self.segment: dict[str, int] = {}  # logical name → current segment number

    def _path_for(self, name: str) -> str:
        if self.limit is None:
            return f"{name}.csv"
        return f"{name}_{self.segment.setdefault(name, 1)}.csv"

    def write(self, name: str, frame: pl.DataFrame) -> None:
        offset = 0
        while True:
            relative = self._path_for(name)
            room = frame.height - offset if self.limit is None else self.limit - self.rows.get(relative, 0)
            if room <= 0 and self.limit is not None:
                self.segment[name] += 1
                continue
            chunk = frame.slice(offset, room)
            path = self.out_dir / relative
            new_file = relative not in self.rows
            if new_file:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(header_line(self.columns))
                self.rows[relative] = 0
            if chunk.height:
                write_csv(chunk, path, header=False)
            self.rows[relative] += chunk.height
            offset += chunk.height
            if offset >= frame.height:
                return


def file_name(ctx: ExportContext) -> str:
    campaign = safe_key_part(str(ctx.campaign.get("name") or ctx.record.get("campaignName") or ctx.campaign_id))
    return ctx.export_type.file_name.format(campaign=campaign)


def package(ctx: ExportContext) -> list[Artifact]:
    """Turn out/ into the object(s) to upload: one CSV, one ZIP, or one CSV per file."""
    if _lost(ctx, ctx.work_dir / "manifest.json"):
        transform(ctx)
    out_dir = ctx.work_dir / "out"
    rows: dict[str, int] = json.loads((ctx.work_dir / "manifest.json").read_text())
    record, export_type = ctx.record, ctx.export_type
    if export_type.packaging == "csv":
        return [
            Artifact(
                out_dir / f"{SINGLE_FILE}.csv",
                export_key(export_type.name, ctx.campaign_id, ctx.export_id, file_name(ctx)),
            )
        ]
    if export_type.packaging == "zip":
        archive = ctx.work_dir / "package" / "export.zip"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for relative in sorted(rows):
                zf.write(out_dir / relative, arcname=relative)
        return [Artifact(archive, export_key(export_type.name, ctx.campaign_id, str(record["_id"]), file_name(ctx)))]
    keyer = getattr(type_module(export_type), "object_key", None)
    return [
        Artifact(
            out_dir / relative,
            keyer(ctx, relative) if keyer else export_key(export_type.name, ctx.campaign_id, ctx.export_id, relative),
        )
        for relative in sorted(rows)
    ]


def upload(ctx: ExportContext, artifacts: list[Artifact]) -> list[UploadedObject]:
    if artifacts and _lost(ctx, artifacts[0].path):  # they all live in one directory
        artifacts = package(ctx)
    bucket = ctx.settings.bucket_for(ctx.export_type.bucket)
    content_type = "application/zip" if ctx.export_type.packaging == "zip" else "text/csv; charset=utf-8"
    return [
        upload_file(ctx.s3, a.path, bucket=bucket, key=a.key, acl=ctx.export_type.acl, content_type=content_type)
        for a in artifacts
    ]


def finish_fields(ctx: ExportContext, uploaded: list[UploadedObject]) -> dict[str, Any]:
    """key, count and meta for the FINISHED record."""
    if _lost(ctx, ctx.work_dir / "manifest.json"):
        uploaded = upload(ctx, package(ctx))  # the counts must describe the objects at the keys
    rows: dict[str, int] = json.loads((ctx.work_dir / "manifest.json").read_text())
    keys = [u.key for u in uploaded]
    meta: dict[str, Any] = {
        "bucket": uploaded[0].bucket if uploaded else ctx.settings.bucket_for(ctx.export_type.bucket),
        "bytes": sum(u.bytes for u in uploaded),
        "sha256": uploaded[0].sha256 if len(uploaded) == 1 else None,
        "objects": [{"key": u.key, "bytes": u.bytes, "sha256": u.sha256} for u in uploaded],
    }
    if ctx.export_type.packaging != "csv":
        meta["files"] = [{"name": name, "rows": count} for name, count in sorted(rows.items())]
    return {
        "key": keys if ctx.export_type.packaging == "multi_csv" else keys[0],
        "count": sum(rows.values()),
        "meta": meta,
    }


def clean_up(ctx: ExportContext) -> None:
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
