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

from export_pipelines.domain.export_types import ExportType

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
    """Rows done so far in a stage, written to the record at most every `interval` seconds."""

    report: Callable[[str, int], None]
    interval: float = 1.0
    _last: float = field(default=0.0, repr=False)

    def __call__(self, stage: str, rows: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.report(stage, rows)


@dataclass
class ExportContext:
    """One export being produced: its record and campaign, the data it reads, where its files go."""

    record: dict[str, Any]
    campaign: dict[str, Any]
    export_type: ExportType
    db: Database
    s3: Any  # a boto3 S3 client (wave files are read from S3)
    buckets: Mapping[str, str]  # logical bucket (exportsS3, ...) → configured bucket
    work_dir: Path
    max_rows_per_file: int
    sfmc_config: str | None
    log: logging.Logger | Any
    progress: Progress = field(default_factory=lambda: Progress(lambda stage, rows: None))

    @property
    def campaign_id(self) -> str:
        return str(self.record["campaignId"])

    @property
    def export_id(self) -> str:
        return str(self.record["_id"])

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
    - `object_key`: the S3 key of each file of a `multi_csv` type.
    """

    match: Callable[[ExportContext], dict[str, Any]] | None = None
    extract: Callable[[ExportContext], None] | None = None
    transform: Callable[[ExportContext], Iterator[pl.DataFrame]] | None = None
    object_key: Callable[[ExportContext, str], str] | None = None
