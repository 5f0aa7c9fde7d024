"""The export records the API answers with (SPEC §4): one, one with its downloads and run, a page of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from export_api.models.base import MAX_LIMIT, MAX_PAGE
from export_core.formats import FORMATS
from export_core.vocabulary import STATUSES


class Progress(BaseModel):
    stage: str | None = None
    rows: int | None = Field(default=None, ge=0)
    total: int | None = Field(default=None, ge=0)


class RecordDates(BaseModel):
    created: datetime | None = None
    triggered: datetime | None = None
    finished: datetime | None = None
    failed: datetime | None = None
    expired: datetime | None = None
    deleted: datetime | None = None


class RecordMeta(BaseModel):
    """What the run noted about its output (e.g. `bucket`, `skipped`); its fields vary by export type."""

    model_config = ConfigDict(extra="allow")


class RecordError(BaseModel):
    message: str | None = None
    payload: str | None = None


class ScheduleTick(BaseModel):
    """The schedule tick that queued it (SPEC §12); `manual` for POST .../run."""

    id: str
    scheduledFor: datetime
    manual: bool | None = None


class Delivered(BaseModel):
    """One delivery that succeeded."""

    destinationId: str | None = None
    type: str | None = None
    name: str | None = None
    remotePaths: list[str] | None = None
    deliveredAt: datetime | None = None


class ExportRecord(BaseModel):
    """An export record (SPEC §4); records may carry more fields than listed."""

    model_config = ConfigDict(extra="allow")

    id: str
    campaignId: str
    campaignName: str | None = None
    exportType: str
    status: str = Field(json_schema_extra={"enum": list(STATUSES)})
    requesterUserId: str | None = None
    requestId: str | None = Field(default=None, description="X-Request-ID of the POST that created it.")
    dateKey: str | None = None
    includeAllMarkets: bool | None = None
    format: str = Field(
        default="csv",
        json_schema_extra={"enum": list(FORMATS)},
        description="The file format; csv for records made before formats existed.",
    )
    date: RecordDates
    key: str | list[str] | None = None
    count: int | None = None
    preliminaryCount: int | None = None
    # Absent until the export ends, never null (a union of an object and null defeats client generators).
    meta: RecordMeta | SkipJsonSchema[None] = None
    runId: str | None = None
    progress: Progress | None = None
    error: RecordError | None = None
    deleted: bool | None = Field(default=None, description="CCPA: its files are gone.")
    deletedBy: str | None = None
    since: datetime | None = Field(default=None, description="Only rows created after this instant were asked for.")
    schedule: ScheduleTick | None = None
    incremental: bool | None = Field(default=None, description="Only rows its schedule has not sent yet.")
    skipEmpty: bool | None = Field(default=None, description="No new rows: FINISHED with count 0 and no file.")
    window: Any = Field(default=None, description="What an incremental run covers.")
    destinations: list[str] | None = Field(
        default=None, description="Ids of the destinations its files are pushed to once FINISHED (SPEC §13)."
    )
    deliveredTo: list[Delivered] | None = Field(
        default=None, description="Where its files were delivered: one entry per delivery that succeeded."
    )


class RunStep(BaseModel):
    key: str | None = None
    status: str | None = None


class Run(BaseModel):
    """The Dagster run behind the export; `available` false when Dagster could not tell."""

    id: str | None
    status: str | None
    available: bool
    stepsSucceeded: int | None = None
    stepsFailed: int | None = None
    steps: list[RunStep] | None = None


class DownloadLink(BaseModel):
    key: str
    url: str


class ExportDetail(ExportRecord):
    """A record with its download link(s) when FINISHED and its run."""

    path: str | None = Field(default=None, description="Signed GET URL (single-file types).")
    paths: list[DownloadLink] | None = Field(
        default=None, description="Signed GET URLs, one per key (multi-file types)."
    )
    run: Run


class ExportList(BaseModel):
    """One page of a campaign's records."""

    model_config = ConfigDict(extra="forbid")

    exports: list[ExportRecord]
    page: int = Field(ge=0, le=MAX_PAGE)
    limit: int = Field(ge=1, le=MAX_LIMIT)
    total: int = Field(ge=0)
