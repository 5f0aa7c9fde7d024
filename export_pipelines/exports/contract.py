"""The contract between the stages and a type module: what a type's hooks get, what they may provide.

A type module imports this (and `sources`), never the stages: it declares a `TypeLogic` with
the hooks it needs, and `exports/registry.py` lists it. Every hook is optional; a type
without a module (a purely filtered type) gets the defaults of `exports/filtered.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from export_core.export_types import EXPORT_TYPES, ExportType
from export_core.plan import ExportPlan

if TYPE_CHECKING:  # polars is the steps' business; loading the code location does not import it
    import polars as pl

# Optional column of a transformed frame: which output file (relative name, no `.csv`) a row goes to.
FILE_COLUMN = "__file"
SINGLE_FILE = "data"


class PermanentExportError(Exception):
    """Bad data or a request that can never succeed: fail at once, do not retry.

    Its message is shown to campaign admins (the record's `error.message`): one plain sentence.
    """


class NoMarketsFound(PermanentExportError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"NoMarketsFound: campaign {campaign_id!r} has no markets")


@dataclass
class Progress:
    """How far a stage is: (stage, done, total or None), written to the record at most every
    `interval` seconds. `total` is what the stage counts towards, given only when known."""

    report: Callable[[str, int, int | None], None]
    interval: float = 1.0
    _last: float = field(default=0.0, repr=False)

    def __call__(self, stage: str, done: int, total: int | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.report(stage, done, total)


@dataclass
class ExportContext:
    """One export being produced: its plan (record, campaign, type, bucket, keys, where its files
    go: export_core/plan.py, decided once per run), the data it reads and the run's settings."""

    plan: ExportPlan
    db: Database
    s3: Any  # a boto3 S3 client (wave files are read from S3)
    buckets: Mapping[str, str]  # logical bucket (exportsS3, ...) → configured bucket, for reading sources
    max_rows_per_file: int
    sfmc_config: str | None
    log: logging.Logger | Any
    progress: Progress = field(default_factory=lambda: Progress(lambda stage, done, total: None))
    # What the rows query adds to the type's filter (`since`, an incremental run's new keys): set by
    # the extract stage (exports/incremental.py), used by every query of the type's rows.
    row_filter: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.plan.record

    @property
    def campaign(self) -> dict[str, Any]:
        return self.plan.campaign

    @property
    def export_type(self) -> ExportType:
        return EXPORT_TYPES[self.plan.export_type]

    @property
    def work_dir(self) -> Path:
        return Path(self.plan.work_dir)

    @property
    def campaign_id(self) -> str:
        return str(self.record["campaignId"])

    @property
    def export_id(self) -> str:
        return str(self.record["_id"])

    @property
    def expected_rows(self) -> int | None:
        """Rows the extract and transform stages will produce, when known before they run: the
        preliminary count, for a type with one row per entry of the campaign (none with
        includeAllMarkets, whose extra rows are not counted in advance)."""
        if not self.export_type.row_per_entry or self.record.get("includeAllMarkets"):
            return None
        count = self.record.get("preliminaryCount")
        return int(count) if count is not None else None

    def extract_path(self, name: str) -> Path:
        """Directory of one extracted dataset (staged parts), created on demand."""
        path = self.work_dir / "extract" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class TypeLogic:
    """The hooks a type module may provide; what it leaves out, `exports/filtered.py` does.

    - `match`: the source filter, when it depends on the record (codeWaves' dateKey);
    - `extract`: write the type's datasets under `ctx.extract_path(...)`;
    - `transform`: frames of output rows (the registry's columns, plus FILE_COLUMN for
      multi-file types), read from what extract wrote;
    - `object_key`: the S3 key of each file of a `multi_csv` type;
    - `download_name`: the file name a download of each such file saves under (Content-Disposition),
      with the campaign's own name where the key has it made key-safe.
    """

    match: Callable[[ExportContext], dict[str, Any]] | None = None
    extract: Callable[[ExportContext], None] | None = None
    transform: Callable[[ExportContext], Iterator[pl.DataFrame]] | None = None
    object_key: Callable[[ExportContext, str], str] | None = None
    download_name: Callable[[ExportContext, str], str] | None = None
