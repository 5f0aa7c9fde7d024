"""`waitlist`: the scoring records not selected, minus every member of the campaign's scheduled SMS waves.

Wave files are CSVs in the vfScoringS3 bucket at `waves/{campaignId}/{dateKey}/*.csv`
(every dateKey), each with a `memberId` column. They may list millions of members, so
they are read with polars (that column only) and removed with an anti-join; a `$nin`
with such a list would cost the database O(records × ids).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator

import polars as pl

from export_pipelines.exports import filtered, sources
from export_pipelines.exports.contract import ExportContext, PermanentExportError, TypeLogic

WAVE_MEMBERS = "wave_members"
WAVE_MEMBER_SCHEMA = {"memberId": pl.String}
LARGE_WAVES = 1_000_000  # above this many excluded members, say so: the waves may be wrong


def wave_prefix(campaign_id: str) -> str:
    return f"waves/{campaign_id}/"


def wave_keys(ctx: ExportContext) -> list[str]:
    """Keys of the campaign's wave files: `waves/{campaignId}/{dateKey}/{name}.csv`, nothing deeper."""
    prefix = wave_prefix(ctx.campaign_id)
    keys = []
    paginator = ctx.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=ctx.buckets["vfScoringS3"], Prefix=prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(prefix) :].split("/")
            if len(rest) == 2 and rest[0] and rest[1].lower().endswith(".csv"):
                keys.append(obj["Key"])
    return sorted(keys)


def _members_of(path: str, key: str) -> pl.DataFrame:
    """The non-blank member ids of one wave file (surrounding spaces trimmed); an empty file has none."""
    try:
        scan = pl.scan_csv(path, infer_schema=False)
        if "memberId" not in scan.collect_schema().names():
            raise PermanentExportError(f"wave file {key} has no memberId column")
        ids = scan.select(pl.col("memberId").str.strip_chars()).collect()
    except pl.exceptions.NoDataError:
        return pl.DataFrame(schema=WAVE_MEMBER_SCHEMA)
    except pl.exceptions.PolarsError as exc:
        raise PermanentExportError(f"wave file {key} is not a readable CSV: {exc}") from exc
    return ids.filter(pl.col("memberId").is_not_null() & (pl.col("memberId") != ""))


def extract_wave_members(ctx: ExportContext) -> int:
    """Download every wave file, keep the distinct member ids as one staged part; returns how many."""
    download = ctx.work_dir / "waves"
    download.mkdir(parents=True, exist_ok=True)
    keys = wave_keys(ctx)
    frames = []
    try:
        for number, key in enumerate(keys):
            path = download / f"{number:05d}.csv"
            ctx.s3.download_file(ctx.buckets["vfScoringS3"], key, str(path))
            frames.append(_members_of(str(path), key))
            path.unlink()
    finally:
        shutil.rmtree(download, ignore_errors=True)
    members = pl.concat(frames) if frames else pl.DataFrame(schema=WAVE_MEMBER_SCHEMA)
    members = members.unique(maintain_order=False)
    sources.write_part(members, ctx.extract_path(WAVE_MEMBERS) / f"members{sources.PART_SUFFIX}")
    count = members.height
    ctx.log.info(f"{count} distinct member(s) in {len(keys)} SMS wave file(s) under {wave_prefix(ctx.campaign_id)}")
    if count > LARGE_WAVES:
        ctx.log.warning(
            f"{count} members are scheduled for SMS in campaign {ctx.campaign_id} (more than {LARGE_WAVES}): "
            "check the wave files if that is unexpected"
        )
    return count


def extract(ctx: ExportContext) -> None:
    """Wave members from S3, then the unselected scoring records with their users, and the entries' snapshots."""
    extract_wave_members(ctx)
    filtered.extract(ctx, LOGIC)


def rows(parts: Iterable[pl.DataFrame], members: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """Each part of the filtered rows without the wave `members` (an anti-join on memberId)."""
    for part in parts:
        yield part.join(members, on="memberId", how="anti", maintain_order="left")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads the staged wave members and hands them to `rows` with the filtered rows."""
    yield from rows(filtered.transform(ctx), sources.read_all(ctx, WAVE_MEMBERS, WAVE_MEMBER_SCHEMA))


LOGIC = TypeLogic(extract=extract, transform=transform)
