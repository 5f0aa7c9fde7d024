"""The stages every export goes through, free of Dagster so they can be tested directly.

extract (the type's hook, else exports/filtered.py) → transform (rows → formatted CSV files, or
the typed rows → one parquet/xlsx file, by the record's `format`: export_core/formats.py) → package (one
file, gzipped for csv.gz; a ZIP; or several CSVs) → upload (S3, the type's bucket and ACL) → finish
(key, count and meta for the FINISHED record). Each stage reads the export's plan (export_core/plan.py:
bucket, keys, file names, packaging, format, decided once when the run starts) and does its own
step from what the one before it staged: files under the export's staging directory (kept until
the export FINISHED, so a re-execution from failure resumes at the failed step with the same
plan), or for per-run scratch types (SPEC §5) a directory of the run that is gone when the run
ends. No stage removes a scratch directory: end_states.py does.

polars, the cell formatting and the type modules (with pyarrow and pymongoarrow) are imported
by the steps that use them, not when the code location loads: a run worker marks its export
TRIGGERED that much sooner after the previous export (docs/performance.md, the queue).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pymongo.database import Database

from export_core import plan
from export_core.export_types import EXPORT_TYPES
from export_core.formats import FORMATS, Format, sheet_title
from export_core.json_logs import scrub
from export_core.keys import content_disposition
from export_core.membership import MembershipStore
from export_core.plan import ExportPlan, run_scratch_dir, staging_dir
from export_core.storage import UploadedObject
from export_pipelines.exports.contract import FILE_COLUMN, SINGLE_FILE, ExportContext, PermanentExportError, Progress

if TYPE_CHECKING:
    import polars as pl

PREVIEW_ROWS = 10


@dataclass(frozen=True)
class Artifact:
    """One file to upload: where it is staged, its key, and the name a download saves it under."""

    path: Path
    key: str
    name: str = ""  # the file name users see (the campaign's own name); "" → the key's last part


@dataclass(frozen=True)
class Package:
    """What package hands to upload: the objects, and the rows of each file (for the record's meta)."""

    artifacts: list[Artifact]
    rows: dict[str, int]
    preview: str = ""
    format_meta: dict[str, Any] | None = None  # what the format's writer says (xlsx: its sheets)


@dataclass(frozen=True)
class Uploaded:
    """What upload hands to finish; it travels as the op's output, so it survives the run's files."""

    objects: list[UploadedObject]
    rows: dict[str, int]
    preview: str = ""
    format_meta: dict[str, Any] | None = None  # None (a class default) also in outputs pickled before formats


class Uploader(Protocol):
    def upload(
        self, path: Path, *, bucket: str, key: str, acl: str, content_type: str, content_disposition: str
    ) -> UploadedObject: ...


@dataclass(frozen=True)
class Workspace:
    """Where an export's files go and the settings its stages need (from the run's resources)."""

    data_dir: Path
    buckets: Mapping[str, str]
    max_rows_per_file: int = 100_000
    sfmc_config: str | None = None
    timeout_millis: int = 3_600_000


def resolve_plan(record: dict[str, Any], db: Database, workspace: Workspace, *, run_id: str) -> ExportPlan:
    """The export's plan (export_core/plan.py): reads its campaign, the one time a run does; the campaign
    must still exist and the type be registered."""
    export_type = EXPORT_TYPES.get(record.get("exportType", ""))
    if export_type is None:
        raise PermanentExportError(f"Invalid export type: {str(record.get('exportType'))[:100]!r}.")
    campaign = db["campaigns"].find_one({"_id": record["campaignId"]})
    if campaign is None:
        raise PermanentExportError(f"The campaign {str(record['campaignId'])[:100]!r} no longer exists.")
    try:
        return plan.resolve(
            record, campaign, export_type, buckets=workspace.buckets, data_dir=workspace.data_dir, run_id=run_id
        )
    except plan.PlanError as exc:
        raise PermanentExportError(str(exc)) from exc


def staged_plan(data_dir: Path, export_id: str, run_id: str) -> ExportPlan | None:
    """The plan staged for the export (its staging directory) or by this run (its scratch), if any;
    one this version cannot read (staged by another) counts as none, and is resolved anew."""
    for work_dir in (staging_dir(data_dir, export_id), run_scratch_dir(data_dir, run_id)):
        try:
            staged = plan.load(work_dir)
        except (TypeError, ValueError):
            continue
        if staged is not None and staged.export_id == export_id:
            return staged
    return None


def context_of(
    export_plan: ExportPlan, db: Database, s3: Any, workspace: Workspace, log: Any, progress: Progress | None = None
) -> ExportContext:
    """Everything a stage needs about one export: its plan, and the run's clients and settings."""
    return ExportContext(
        plan=export_plan,
        db=db,
        s3=s3,
        buckets=workspace.buckets,
        max_rows_per_file=workspace.max_rows_per_file,
        sfmc_config=workspace.sfmc_config,
        log=log,
        progress=progress or Progress(lambda stage, done, total: None),
    )


def build_context(
    record: dict[str, Any],
    db: Database,
    s3: Any,
    workspace: Workspace,
    log: Any,
    *,
    run_id: str,
    progress: Progress | None = None,
) -> ExportContext:
    """A fresh plan for `record`, staged, and its context (tests and the bench; a run's steps get
    theirs from ExportRunResource, which reuses a staged plan)."""
    export_plan = resolve_plan(record, db, workspace, run_id=run_id)
    export_plan.save()
    return context_of(export_plan, db, s3, workspace, log, progress)


def preliminary_count(ctx: ExportContext) -> int | None:
    """Entries of the campaign, for progress display; None where it means nothing."""
    if not ctx.export_type.preliminary_count:
        return None
    # count_documents, not the `count` command: on the local server `count` scans the whole
    # collection, the aggregation uses the campaign index (docs/performance.md).
    return ctx.db["entries"].count_documents({"campaignId": ctx.campaign_id})


def extract(ctx: ExportContext) -> None:
    """Read the export's datasets from MongoDB (and S3) into staged parts (Arrow IPC) under extract/."""
    from export_pipelines.exports import filtered, incremental
    from export_pipelines.exports.registry import logic_of

    shutil.rmtree(ctx.work_dir / "extract", ignore_errors=True)  # a re-run starts clean
    logic = logic_of(ctx.export_type.name)
    ctx.row_filter = incremental.row_filter(ctx, filtered.match(ctx, logic))
    if logic.extract:
        logic.extract(ctx)
    else:
        filtered.extract(ctx, logic)


def export_format(ctx: ExportContext) -> Format:
    """The export's format, as its plan says (csv for a record without one)."""
    return FORMATS[ctx.plan.format]


def transform(ctx: ExportContext) -> dict[str, int]:
    """Write the type's rows as formatted CSV files under out/ (or, for parquet and xlsx, the typed
    rows as they are into that one file); returns the rows per file.

    Records which users the files contain (CCPA, SPEC §7) batch by batch as it writes them.
    """
    import polars as pl

    from export_core.csv_format import format_cells
    from export_pipelines.exports import filtered, incremental
    from export_pipelines.exports.registry import logic_of

    if not (ctx.work_dir / "extract").is_dir():
        raise PermanentExportError("The extracted data of this export is gone; re-run the export from the start.")
    out_dir = ctx.work_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    export_type = ctx.export_type
    columns = export_type.columns
    fmt = export_format(ctx)
    if fmt.writer is not None:
        return _transform_typed(ctx, fmt, out_dir)
    writer = _SegmentedWriter(out_dir, columns, ctx.max_rows_per_file if export_type.segment_rows else None)
    members = MembershipStore(ctx.db)
    members.ensure_indexes()
    members.reset(ctx.export_id)
    logic = logic_of(export_type.name)
    preview: pl.DataFrame | None = None
    for frame in incremental.new_rows(ctx, (logic.transform or filtered.transform)(ctx)):
        if frame.height == 0:
            continue
        if export_type.member_column is not None:
            members.add(ctx.export_id, frame.get_column(export_type.member_column).cast(pl.String).to_list())
        cells = format_cells(frame, columns)  # once per batch: polars' cost is per call, not per cell
        if FILE_COLUMN in frame.columns:
            files = cells.with_columns(frame.get_column(FILE_COLUMN))
            for (name,), group in files.group_by(FILE_COLUMN, maintain_order=True):
                file_cells = group.drop(FILE_COLUMN)
                preview = file_cells.head(PREVIEW_ROWS) if preview is None else preview
                writer.write(str(name), file_cells)
        else:
            preview = cells.head(PREVIEW_ROWS) if preview is None else preview
            writer.write(SINGLE_FILE, cells)
        ctx.progress("transform", sum(writer.rows.values()), ctx.expected_rows)
    if ctx.plan.packaging in ("csv", "zip") and not writer.rows:  # empty: a header-only file
        writer.write(SINGLE_FILE, pl.DataFrame(schema=dict.fromkeys(columns, pl.String)))
    rows = dict(writer.rows)
    text = preview_markdown(preview if preview is not None else pl.DataFrame(schema=dict.fromkeys(columns)))
    (ctx.work_dir / "manifest.json").write_text(json.dumps({"rows": rows, "preview": text}))
    return rows


def _transform_typed(ctx: ExportContext, fmt: Format, out_dir: Path) -> dict[str, int]:
    """transform for a typed format: the rows as they are, through the format's writer, into one file.
    The preview (and nothing else) still goes through the CSV cell formatting."""
    import polars as pl

    from export_core.csv_format import format_cells
    from export_pipelines.exports import filtered, incremental
    from export_pipelines.exports.registry import logic_of

    export_type = ctx.export_type
    columns = export_type.columns
    relative = f"{SINGLE_FILE}{fmt.extension}"
    assert fmt.writer is not None
    writer = fmt.writer(out_dir / relative, columns, sheet_title(export_type.file_name))
    members = MembershipStore(ctx.db)
    members.ensure_indexes()
    members.reset(ctx.export_id)
    preview: pl.DataFrame | None = None
    for frame in incremental.new_rows(ctx, (logic_of(export_type.name).transform or filtered.transform)(ctx)):
        if frame.height == 0:
            continue
        if export_type.member_column is not None:
            members.add(ctx.export_id, frame.get_column(export_type.member_column).cast(pl.String).to_list())
        if preview is None:
            preview = format_cells(frame.head(PREVIEW_ROWS), columns)
        writer.write(frame)
        ctx.progress("transform", writer.rows, ctx.expected_rows)
    format_meta = writer.close()
    rows = {relative: writer.rows}
    text = preview_markdown(preview if preview is not None else pl.DataFrame(schema=dict.fromkeys(columns)))
    manifest = {"rows": rows, "preview": text, "formatMeta": format_meta}
    (ctx.work_dir / "manifest.json").write_text(json.dumps(manifest))
    return rows


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
        from export_core.csv_format import header_line, write_csv

        offset = 0
        while True:
            relative = self._path_for(name)
            room = frame.height - offset if self.limit is None else self.limit - self.rows.get(relative, 0)
            if room <= 0 and self.limit is not None:
                self.segment[name] += 1
                continue
            chunk = frame.slice(offset, room)
            path = self.out_dir / relative
            if relative not in self.rows:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(header_line(self.columns))
                self.rows[relative] = 0
            if chunk.height:
                write_csv(chunk, path, header=False)
            self.rows[relative] += chunk.height
            offset += chunk.height
            if offset >= frame.height:
                return


def preview_markdown(cells: pl.DataFrame) -> str:
    """The first rows as a Markdown table for the Dagster run page; no e-mail address or phone number shows.

    Phone columns are masked whole; every other cell goes through the log scrubber.
    """

    def cell(name: str, value: Any) -> str:
        if value is None:
            return ""
        if "phone" in name.lower():
            return "***"
        return re.sub(r"[|\r\n]", " ", scrub(str(value)))[:60]

    head = cells.head(PREVIEW_ROWS)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += [
        "| " + " | ".join(cell(n, v) for n, v in zip(head.columns, row, strict=True)) + " |" for row in head.iter_rows()
    ]
    return "\n".join(lines)


def package(ctx: ExportContext) -> Package:
    """Turn out/ into the object(s) to upload: one CSV, one ZIP, or one CSV per file."""
    manifest_path = ctx.work_dir / "manifest.json"
    if not manifest_path.exists():
        raise PermanentExportError("The transformed files of this export are gone; re-run the export from the start.")
    manifest = json.loads(manifest_path.read_text())
    rows: dict[str, int] = manifest["rows"]
    out_dir = ctx.work_dir / "out"
    export_plan = ctx.plan
    if export_plan.packaging == "csv":
        assert export_plan.key is not None and export_plan.download_name is not None
        fmt = export_format(ctx)
        staged = out_dir / f"{SINGLE_FILE}{'.csv' if fmt.writer is None else fmt.extension}"
        if fmt.package is not None:  # csv.gz: the CSV, compressed
            packed = ctx.work_dir / "package" / f"{SINGLE_FILE}{fmt.extension}"
            packed.parent.mkdir(parents=True, exist_ok=True)
            fmt.package(staged, packed)
            staged = packed
        artifacts = [Artifact(staged, export_plan.key, export_plan.download_name)]
    elif export_plan.packaging == "zip":
        assert export_plan.key is not None and export_plan.download_name is not None
        archive = ctx.work_dir / "package" / "export.zip"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for relative in sorted(rows):
                zf.write(out_dir / relative, arcname=relative)
        artifacts = [Artifact(archive, export_plan.key, export_plan.download_name)]
    else:
        from export_pipelines.exports.registry import logic_of

        logic = logic_of(export_plan.export_type)
        artifacts = [
            Artifact(
                out_dir / relative,
                logic.object_key(ctx, relative) if logic.object_key else export_plan.file_key(relative),
                logic.download_name(ctx, relative) if logic.download_name else Path(relative).name,
            )
            for relative in sorted(rows)
        ]
    return Package(
        artifacts=artifacts, rows=rows, preview=manifest.get("preview", ""), format_meta=manifest.get("formatMeta")
    )


def skips_empty(ctx: ExportContext, rows: Mapping[str, int]) -> bool:
    """A `skipEmpty` export without rows (SPEC §12) uploads nothing and ends FINISHED with count 0."""
    return bool(ctx.record.get("skipEmpty")) and not sum(rows.values())


def upload(ctx: ExportContext, staged: Package, s3: Uploader) -> Uploaded:
    """Upload every artifact to the type's bucket with its ACL; an object only appears once complete
    (nothing, for an empty `skipEmpty` export).

    Each object carries `Content-Disposition: attachment` with its file name, so a download saves
    under the campaign's own name whatever the client (and whatever S3-compatible server).
    """
    if skips_empty(ctx, staged.rows):
        return Uploaded(objects=[], rows=staged.rows, preview=staged.preview, format_meta=staged.format_meta)
    missing = [a.path.name for a in staged.artifacts if not a.path.exists()]
    if missing:
        raise PermanentExportError("The packaged files of this export are gone; re-run the export from the start.")
    export_plan = ctx.plan
    objects = []
    for number, artifact in enumerate(staged.artifacts):
        objects.append(
            s3.upload(
                artifact.path,
                bucket=export_plan.bucket,
                key=artifact.key,
                acl=export_plan.acl,
                content_type=export_plan.content_type,
                content_disposition=content_disposition(artifact.name or artifact.key.rpartition("/")[2]),
            )
        )
        ctx.progress("upload", number + 1, len(staged.artifacts))
    return Uploaded(objects=objects, rows=staged.rows, preview=staged.preview, format_meta=staged.format_meta)


def finish_fields(ctx: ExportContext, uploaded: Uploaded) -> dict[str, Any]:
    """key, count and meta for the FINISHED record, from what upload reports; the `window` of an
    incremental or `since` export (whose delivered keys are saved here, before FINISHED)."""
    from export_pipelines.exports import incremental

    objects = uploaded.objects
    keys = [u.key for u in objects]
    meta: dict[str, Any] = {
        "bucket": objects[0].bucket if objects else ctx.plan.bucket,
        "bytes": sum(u.bytes for u in objects),
        "sha256": objects[0].sha256 if len(objects) == 1 else None,
        "objects": [{"key": u.key, "bytes": u.bytes, "sha256": u.sha256} for u in objects],
    }
    if ctx.plan.packaging != "csv":
        meta["files"] = [{"name": name, "rows": count} for name, count in sorted(uploaded.rows.items())]
    meta["format"] = ctx.plan.format
    meta.update(uploaded.format_meta or {})
    if not objects and skips_empty(ctx, uploaded.rows):
        meta["skipped"] = "empty"
    return {
        "key": keys if ctx.plan.packaging == "multi_csv" else (keys[0] if keys else None),
        "count": sum(uploaded.rows.values()),
        "meta": meta,
        **incremental.finish_fields(ctx),
    }
