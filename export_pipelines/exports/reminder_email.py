"""`reminderEmail`, `reminderEmailSample`, `autoReminderEmail`: selected fans, formatted for SFMC (SPEC §5).

A row per scoring record of the campaign with `selected: true`, joined to
- the user (`email`, `firstName`, `countryCode`), field by field falling back to the entry's
  `user` snapshot (SPEC §2), and to the entry's `localeId` when scoring has no `locale`;
- the fan's code: the `codes` document with `status: assigned`, `assignedTo` = memberId and the
  scoring record's market (the newest when there are several) — the collection that issues
  codes, not the entry's `codes` list, which may also hold legacy codes of other presales;
- the market's event (name, date, venue, ticket link).
Country = scoring.countryCode, else user.countryCode, else the market's; region, MID, locale
and wording come from the SFMC tables (export_core/sfmc.py).

Memory stays flat: extract writes every input in raw batches to staged parts, then hashes the
parts by member id into buckets of about BUCKET_ROWS rows; transform joins one bucket at a
time (polars) and yields it, and the generic writer appends each bucket's rows to the per
region/locale CSVs and segments them. No region, and no whole input, is ever one frame.

File of each row (contract.FILE_COLUMN): `{region}/{locale}` for the ZIPs (→ `NA/en-us_1.csv`),
`{region}` for autoReminderEmail (→ one CSV per region under its SFMC prefix).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from export_core.keys import display_file_name, safe_key_part
from export_core.sfmc import LOCALE, LOCALE_STRIP, RAW_LOCALE, SfmcConfig, SfmcConfigError, load_sfmc_config
from export_pipelines.exports import sources
from export_pipelines.exports.contract import FILE_COLUMN, ExportContext, PermanentExportError, TypeLogic

SAMPLE_ROWS = 10  # reminderEmailSample: rows per region + locale
# Input rows (scoring + entries + codes) per join bucket, i.e. what transform holds at once:
# sized to keep the transform's peak memory low (figures: docs/performance.md).
BUCKET_ROWS = 200_000
INPUTS = {"scoring": "memberId", "entries": "userId", "codes": "assignedTo"}  # dataset → member id column

SCORING_SCHEMA: dict[str, Any] = {
    "memberId": pl.String,
    "marketId": pl.String,
    "scoringLocale": pl.String,
    "scoringCountry": pl.String,
    "userEmail": pl.String,
    "userFirstName": pl.String,
    "userCountry": pl.String,
}
ENTRY_SCHEMA: dict[str, Any] = {
    "userId": pl.String,
    "entryLocale": pl.String,
    "snapEmail": pl.String,
    "snapFirstName": pl.String,
}
# Selected scoring records with the member's user, joined by the database (the user's country
# under its own name: scoring has a countryCode of its own).
SCORING_ROWS = sources.SCORING.only("memberId", "marketId", "locale", "countryCode").with_users(
    columns=(
        sources.col("userEmail", path="email"),
        sources.col("userFirstName", path="firstName"),
        sources.col("userCountry", path="countryCode"),
    )
)
CODE_SCHEMA: dict[str, Any] = {
    "assignedTo": pl.String,
    "codeMarketId": pl.String,
    "code": pl.String,
    "assignedAt": pl.Datetime("ms", "UTC"),
}


def sfmc_config(ctx: ExportContext) -> SfmcConfig:
    try:
        return load_sfmc_config(ctx.sfmc_config)
    except SfmcConfigError as exc:
        raise PermanentExportError(str(exc)) from exc


# -- extract --------------------------------------------------------------------------------


def _scoring_rows(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Selected scoring records with the member's user (e-mail, first name, country)."""
    for frame in SCORING_ROWS.read(ctx.db, {"campaignId": ctx.campaign_id, **ctx.export_type.match}):
        yield frame.rename({"locale": "scoringLocale", "countryCode": "scoringCountry"}).select(list(SCORING_SCHEMA))


def _entry_rows(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    for frame in sources.ENTRIES.only("userId", "localeId", "snapEmail", "snapFirstName").read(
        ctx.db, {"campaignId": ctx.campaign_id}
    ):
        yield frame.rename({"localeId": "entryLocale"}).select(list(ENTRY_SCHEMA))


def _code_rows(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    for frame in sources.CODES.only("assignedTo", "marketId", "code", "assignedAt").read(
        ctx.db, {"campaignId": ctx.campaign_id, "status": "assigned"}
    ):
        yield frame.rename({"marketId": "codeMarketId"}).select(list(CODE_SCHEMA))


def extract(ctx: ExportContext) -> None:
    """Markets, then selected scoring (with its user), entries and assigned codes, bucketed by member."""
    sources.extract_markets(ctx, required=True)
    # Selected fans are joined to their entries and codes in polars, bucket by bucket: a join on
    # fields other than _id (entries.userId, codes.assignedTo) has no index to use.
    total = 0
    for name, frames in (("scoring", _scoring_rows(ctx)), ("entries", _entry_rows(ctx)), ("codes", _code_rows(ctx))):
        rows = sources.write_parts(ctx, frames, f"raw-{name}", counted=total)
        ctx.log.info(f"extracted {rows} {name} rows")
        total += rows
    buckets = max(1, math.ceil(total / BUCKET_ROWS))
    for name, key in INPUTS.items():
        _bucketize(ctx.extract_path(f"raw-{name}"), ctx.extract_path(name), key, buckets)
    (ctx.work_dir / "extract" / "plan.json").write_text(json.dumps({"buckets": buckets}))


def _bucketize(raw_dir: Path, out_dir: Path, key: str, buckets: int) -> None:
    """Split each raw part by hash of the member id into `buckets` directories, part by part."""
    for part in sources.part_paths(raw_dir):
        if buckets == 1:
            (out_dir / "00000").mkdir(exist_ok=True)
            part.rename(out_dir / "00000" / part.name)
            continue
        frame = sources.read_part(part).with_columns(__bucket=pl.col(key).hash(seed=0) % buckets)
        for (bucket,), rows in frame.partition_by("__bucket", as_dict=True, include_key=False).items():
            target = out_dir / f"{int(bucket):05d}"
            target.mkdir(exist_ok=True)
            sources.write_part(rows, target / part.name)
        part.unlink()
    shutil.rmtree(raw_dir, ignore_errors=True)


# -- transform ------------------------------------------------------------------------------


def locale_expr(column: pl.Expr, config: SfmcConfig) -> pl.Expr:
    """SfmcConfig.normalise_locale as a polars expression (tests check the two agree)."""
    stripped = column.str.strip_chars(LOCALE_STRIP)
    canonical = stripped.str.to_lowercase().str.replace_all("_", "-", literal=True)
    mapped = canonical.replace(dict(config.locales))
    usable = stripped.str.contains(f"^{RAW_LOCALE.pattern}$") & mapped.str.contains(f"^{LOCALE.pattern}$")
    return pl.when(usable).then(mapped).otherwise(pl.lit(config.default_locale))


def country_expr(column: pl.Expr) -> pl.Expr:
    stripped = column.str.strip_chars(LOCALE_STRIP).str.to_uppercase()
    return pl.when(stripped != "").then(stripped)


def region_mid_exprs(country: pl.Expr, config: SfmcConfig, lne: bool) -> tuple[pl.Expr, pl.Expr]:
    """SfmcConfig.region_for / mid_for as polars expressions (tests check they agree)."""
    if lne:
        region = pl.lit(config.lne_region, dtype=pl.String)
    else:
        region = country.replace_strict(dict(config.country_regions), default=config.default_region)
    region_mids = {name: r.mid for name, r in config.regions.items()}
    country_mid = country.replace_strict(dict(config.country_mids), default=None, return_dtype=pl.String)
    mid = (
        pl.when(region == config.lne_region)
        .then(pl.lit(config.regions[config.lne_region].mid))
        .otherwise(pl.coalesce(country_mid, region.replace_strict(region_mids, return_dtype=pl.String)))
    )
    return region, mid


def _read_bucket(ctx: ExportContext, name: str, bucket: int, schema: dict[str, Any]) -> pl.DataFrame:
    return sources.read_directory(ctx.extract_path(name) / f"{bucket:05d}", schema)


def reminder_rows(
    scoring: pl.DataFrame,
    entries: pl.DataFrame,
    codes: pl.DataFrame,
    markets: pl.DataFrame,
    campaign: dict[str, Any],
    config: SfmcConfig,
    per_locale: bool = True,
) -> pl.DataFrame:
    """One bucket's rows: the registry columns plus FILE_COLUMN, in scoring order."""
    campaign_id = str(campaign["_id"])
    campaign_type = sources.text(campaign.get("type")) or "standard"
    # One entry per fan and one code per fan and market, so the joins never multiply rows.
    entries = entries.filter(pl.col("userId").is_not_null()).unique("userId", keep="first", maintain_order=True)
    codes = (
        codes.filter(pl.col("assignedTo").is_not_null())
        .sort(["assignedAt", "code"], descending=[True, False], nulls_last=True)
        .unique(["assignedTo", "codeMarketId"], keep="first", maintain_order=True)
    )
    joined = (
        scoring.with_row_index("__row")
        .join(entries, left_on="memberId", right_on="userId", how="left")
        .join(codes, left_on=["memberId", "marketId"], right_on=["assignedTo", "codeMarketId"], how="left")
        .join(markets, on="marketId", how="left")
        .sort("__row")
    )
    country = country_expr(pl.coalesce("scoringCountry", "userCountry", "marketCountry"))
    region, mid = region_mid_exprs(pl.col("countryCode"), config, config.is_lne(campaign_id))
    locale = locale_expr(pl.coalesce("scoringLocale", "entryLocale"), config)
    frame = joined.with_columns(
        email=pl.coalesce("userEmail", "snapEmail"),
        firstName=pl.coalesce("userFirstName", "snapFirstName"),
        locale=locale,
        countryCode=country,
        campaignName=pl.lit(sources.text(campaign.get("name")), dtype=pl.String),
        artistName=pl.lit(sources.text(sources.nested(campaign, "artist.name")), dtype=pl.String),
        presaleName=pl.lit(config.presale_name(campaign_type), dtype=pl.String),
        presaleDate=pl.lit(sources.nested(campaign, "date.presale"), dtype=pl.Datetime("ms", "UTC")),
        campaignType=pl.lit(campaign_type, dtype=pl.String),
    ).with_columns(region=region, mid=mid)
    file_expr = pl.col("region") + "/" + pl.col("locale") if per_locale else pl.col("region")
    return frame.with_columns(file_expr.alias(FILE_COLUMN))


def _cap_per_file(frame: pl.DataFrame, taken: dict[str, int], cap: int) -> pl.DataFrame:
    """At most `cap` rows per file over the whole export (`taken` carries over between buckets)."""
    kept = []
    for (name,), group in frame.group_by(FILE_COLUMN, maintain_order=True):
        room = cap - taken.get(str(name), 0)
        if room > 0:
            kept.append(group.head(room))
            taken[str(name)] = taken.get(str(name), 0) + min(room, group.height)
    return pl.concat(kept) if kept else frame.clear()


Bucket = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]  # (scoring, entries, codes) of one bucket


def rows(
    buckets: Iterable[Bucket],
    markets: pl.DataFrame,
    campaign: dict[str, Any],
    config: SfmcConfig,
    *,
    sample: bool = False,
    per_locale: bool = True,
) -> Iterator[pl.DataFrame]:
    """Each bucket's rows (`reminder_rows`); with `sample`, at most SAMPLE_ROWS per file over all
    buckets. `markets` is the staged markets frame (sources.MARKET_SCHEMA)."""
    markets = markets.select(
        "marketId", "eventName", "eventDate", "venue", "eventLink", marketCountry="marketCountryCode"
    )
    taken: dict[str, int] = {}
    for scoring, entries, codes in buckets:
        if scoring.height == 0:
            continue
        frame = reminder_rows(scoring, entries, codes, markets, campaign, config, per_locale=per_locale)
        yield _cap_per_file(frame, taken, SAMPLE_ROWS) if sample else frame


def _buckets(ctx: ExportContext) -> Iterator[Bucket]:
    """The staged buckets, one at a time (memory holds one bucket); entries and codes are read
    only for a bucket with scoring rows."""
    buckets = json.loads((ctx.work_dir / "extract" / "plan.json").read_text())["buckets"]
    empty = (pl.DataFrame(schema=ENTRY_SCHEMA), pl.DataFrame(schema=CODE_SCHEMA))
    for bucket in range(buckets):
        scoring = _read_bucket(ctx, "scoring", bucket, SCORING_SCHEMA)
        if scoring.height == 0:
            yield scoring, *empty
            continue
        yield (
            scoring,
            _read_bucket(ctx, "entries", bucket, ENTRY_SCHEMA),
            _read_bucket(ctx, "codes", bucket, CODE_SCHEMA),
        )


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads the staged markets and buckets and hands them to `rows` (the writer appends and segments)."""
    config = sfmc_config(ctx)
    yield from rows(
        _buckets(ctx),
        sources.read_markets(ctx),
        ctx.campaign,
        config,
        sample=ctx.export_type.name == "reminderEmailSample",
        per_locale=ctx.export_type.packaging == "zip",
    )


# -- autoReminderEmail keys -----------------------------------------------------------------


def _region_file(ctx: ExportContext, relative_file: str) -> tuple[str, str]:
    """(region prefix, `_{campaign}_{region}_{export id}.csv` template) of one region's file."""
    region = relative_file.removesuffix(".csv")
    config = sfmc_config(ctx)
    if region not in config.regions:
        raise PermanentExportError(f"no SFMC region {region!r} configured for file {relative_file!r}")
    return config.regions[region].prefix, f"_{{campaign}}_{region}_{safe_key_part(ctx.export_id)}.csv"


def _campaign_name(ctx: ExportContext) -> str:
    return str(ctx.campaign.get("name") or ctx.campaign_id)


def object_key(ctx: ExportContext, relative_file: str) -> str:
    """`{region prefix}_{campaign}_{region}_{export id}.csv`: under the region's SFMC prefix,
    unique to the export (a re-run overwrites its own files only) and to the region."""
    prefix, template = _region_file(ctx, relative_file)
    return prefix + template.replace("{campaign}", safe_key_part(_campaign_name(ctx)))


def download_name(ctx: ExportContext, relative_file: str) -> str:
    """The key's file name (after the prefix's last `/`) with the campaign's own name."""
    prefix, template = _region_file(ctx, relative_file)
    return display_file_name(prefix.rpartition("/")[2] + template, _campaign_name(ctx))


LOGIC = TypeLogic(extract=extract, transform=transform, object_key=object_key, download_name=download_name)
