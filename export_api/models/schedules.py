"""What the schedule operations take and answer (SPEC §12), and the document's schema of their bodies.

The rules stay export_core/schedules.py's: a body is checked by parse_schedule / parse_patch, in the order
they check it, so the first refusal (and the field its payload names) is theirs. Their minimum interval is
the app's setting, which pydantic cannot be handed: `schedule_rules`, a dependency of the two operations,
puts it in MIN_INTERVAL for the body's validator (FastAPI solves dependencies before it validates the body).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request

from export_api.checks import parse_date_time
from export_api.errors import ApiError
from export_api.models.base import Body, QueryModel, decoded, invalid
from export_api.models.exports import DestinationIds, export_request_variants
from export_api.state import api_state
from export_core.export_types import EXPORT_TYPES
from export_core.schedule_store import OUTCOMES, RUNS_SHOWN
from export_core.schedules import (
    MAX_CRON_LENGTH,
    MAX_TIMEZONE_LENGTH,
    NEXT_RUNS,
    InvalidSchedule,
    ScheduleRequest,
    parse_patch,
    parse_schedule,
)
from export_core.vocabulary import STATUSES

MIN_INTERVAL: ContextVar[int] = ContextVar("schedule_min_interval_minutes")

Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description="Five fields (minute hour day-of-month month day-of-week), on the wall clock of `timezone`;"
        " runs at most every SCHEDULE_MIN_INTERVAL_MINUTES.",
        examples=["0 6 * * *"],
    ),
]
Timezone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TIMEZONE_LENGTH,
        description="An IANA time zone name.",
        examples=["America/New_York"],
    ),
]
SkipEmpty = Annotated[
    bool, Field(description="A run without new rows ends FINISHED with count 0 and no file (default: incremental).")
]
DateTime = Annotated[datetime, WithJsonSchema({"type": "string", "format": "date-time"})]
Absent = SkipJsonSchema[None]  # `X | Absent = None`: a field that may be left out, never null in JSON


def _never_null(schema: dict[str, Any]) -> None:
    """The document of a model with `Absent` fields: no `default: null` on them."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


async def schedule_rules(request: Request) -> None:
    """The app's minimum interval for the body's validator (async: set in the request's own context)."""
    MIN_INTERVAL.set(api_state(request).settings.schedule_min_interval_minutes)


class ScheduleFields(Body):
    """A schedule's own fields (beyond the export request's), as POST takes them."""

    model_config = ConfigDict(json_schema_extra=_never_null)

    cron: Cron
    timezone: Timezone = "UTC"
    incremental: bool = Field(default=False, description="Send only the rows earlier successful runs have not sent.")
    skipEmpty: SkipEmpty | Absent = None
    destinations: DestinationIds = []
    paused: bool = False


def schedule_fields() -> dict[str, dict[str, Any]]:
    """The schemas of a schedule's own fields, for the variants of the POST body (models/exports.py)."""
    properties = ScheduleFields.model_json_schema()["properties"]
    for schema in properties.values():
        schema.pop("title")
    return dict(properties)


def _create_schema(schema: dict[str, Any]) -> None:
    """The POST body's schema: its variants (what pydantic makes of the fields alone is looser)."""
    schema.clear()
    schema["description"] = (
        "A saved export request (as for POST .../exports; `incremental` only for the types that offer it)"
        " and when it runs."
    )
    schema["oneOf"] = export_request_variants(schedule_fields())


def _refused(exc: InvalidSchedule) -> Exception:
    return invalid(str(exc), exc.field)


class ScheduleCreate(ScheduleFields):
    """A schedule POST: an export request (type, dateKey, includeAllMarkets, format) and when it runs."""

    model_config = ConfigDict(json_schema_extra=_create_schema)

    exportType: str
    format: str
    dateKey: str | None = None
    includeAllMarkets: bool | None = None
    skipEmpty: bool  # always set: its default (incremental) is applied by the parser

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        """parse_schedule's checks in its order; the fields then take what it made of them."""
        try:
            return parse_schedule(decoded(data), min_interval_minutes=MIN_INTERVAL.get()).fields()
        except InvalidSchedule as exc:
            raise _refused(exc) from None

    def schedule_request(self) -> ScheduleRequest:
        return ScheduleRequest(
            export_type=EXPORT_TYPES[self.exportType],
            format=self.format,
            date_key=self.dateKey,
            include_all_markets=self.includeAllMarkets,
            cron=self.cron,
            timezone=self.timezone,
            incremental=self.incremental,
            skip_empty=self.skipEmpty,
            destinations=tuple(self.destinations),
            paused=self.paused,
        )


def _patch_schema(schema: dict[str, Any]) -> None:
    _never_null(schema)
    schema["example"] = {"paused": False}


class SchedulePatch(Body):
    """The fields to change; the others stay."""

    model_config = ConfigDict(json_schema_extra=_patch_schema)

    cron: Cron | Absent = None
    timezone: Timezone | Absent = None
    paused: bool | Absent = None
    skipEmpty: SkipEmpty | Absent = None
    destinations: DestinationIds | Absent = None

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        """parse_patch's checks in its order; only the fields it changes are set."""
        try:
            return parse_patch(decoded(data), min_interval_minutes=MIN_INTERVAL.get())
        except InvalidSchedule as exc:
            raise _refused(exc) from None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ScheduleQuery(QueryModel):
    """GET one schedule: its next runs after `from` (a preview of any date) instead of after now."""

    model_config = ConfigDict(json_schema_extra=_never_null)

    from_: Annotated[
        DateTime | Absent,
        Field(
            alias="from",
            description="Show the runs after this ISO 8601 date-time (offset or Z; none: UTC) instead of after now.",
            examples=["2027-03-13T12:00:00Z"],
        ),
    ] = None

    @field_validator("from_", mode="before")
    @classmethod
    def _date_time(cls, value: object) -> datetime:
        try:
            return parse_date_time(value, "from")
        except ApiError as exc:
            raise invalid(exc.message, exc.payload) from None


class NextRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: DateTime = Field(description="UTC, e.g. 2027-03-14T07:00:00Z.")
    local: DateTime = Field(description="The same instant in the schedule's time zone, with offset.")


class ScheduleRun(BaseModel):
    """One tick: its export record, or `missed` (the stack was down; a later tick caught up)."""

    model_config = ConfigDict(json_schema_extra=_never_null)

    scheduledFor: DateTime
    exportId: str | None
    status: Literal[STATUSES] | None  # type: ignore[valid-type]
    count: int | None
    window: Any = Field(default=None, description="What the run covers (incremental runs).")
    outcome: Literal[OUTCOMES]  # type: ignore[valid-type]
    manual: bool | Absent = Field(default=None, description="Asked for through POST .../run.")


class Schedule(BaseModel):
    """A schedule as the API shows it, with its next runs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_never_null)

    id: str
    campaignId: str
    exportType: str
    format: str
    dateKey: str | Absent = None
    includeAllMarkets: bool | Absent = None
    cron: Cron
    timezone: Timezone
    incremental: bool
    skipEmpty: bool
    destinations: DestinationIds
    paused: bool
    pausedReason: str | None = Field(
        default=None,
        description="Why it is paused: by a user, or after SCHEDULE_PAUSE_AFTER_FAILURES failed runs in a row.",
    )
    pausedAt: DateTime | Absent = None
    createdBy: str = Field(description="The `sub` of the token that created it.")
    createdAt: DateTime
    updatedAt: DateTime | Absent = None
    nextRuns: list[NextRun] = Field(
        max_length=NEXT_RUNS,
        description=f"The next {NEXT_RUNS} runs (none while paused), exactly as they will happen across DST.",
    )


class ScheduleDetail(Schedule):
    runs: list[ScheduleRun] = Field(max_length=RUNS_SHOWN, description=f"The last {RUNS_SHOWN} runs, newest first.")


class ScheduleList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[Schedule]
