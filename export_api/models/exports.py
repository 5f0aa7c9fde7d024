"""What an export POST and list take (SPEC §6, §12, §13), and the document's schema of that POST body.

The export's own fields are checked by export_core.export_types.parse_export_request, the destinations by
export_core.schedules.parse_destinations (both also behind a schedule), in the order the API always did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from export_api.checks import MAX_DATE_TIME_LENGTH, parse_date_time
from export_api.errors import ApiError
from export_api.models.base import NOT_AN_OBJECT, Body, PageQuery, decoded, invalid
from export_core import export_types
from export_core.export_types import EXPORT_TYPES, InvalidExportRequest, parse_export_request
from export_core.formats import DEFAULT_FORMAT, FORMATS
from export_core.records import SORT_FIELDS, RequestOptions, utcnow
from export_core.schedules import MAX_DESTINATIONS, InvalidSchedule, parse_destinations

SORT_ORDERS = ("asc", "desc")


DestinationIds = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=100)]],
    Field(
        max_length=MAX_DESTINATIONS,
        description="Ids of the campaign's destinations the files are pushed to.",
        json_schema_extra={"uniqueItems": True},
    ),
]
DESTINATIONS_SCHEMA = TypeAdapter(DestinationIds).json_schema()


def export_request_variants(schedule_fields: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One object schema per (takes a dateKey, offered in every format, takes `since`) group of export
    types: exactly what an export POST accepts (dateKey required for the types that take one and refused
    for the others; `format` other than csv refused for the ZIP and multi-file types; `since` only for
    the types whose rows say when they were created).

    With `schedule_fields` (a schedule's own fields, models/schedules.py), what parse_schedule accepts: the
    request's fields and those (`cron` required), the groups split by whether the types offer `incremental`."""
    schedule = schedule_fields is not None

    date_key = {"type": "string", "pattern": "^[0-9]{1,16}$", "description": "epoch millis; codeWaves only"}
    since = {
        "type": "string",
        "format": "date-time",
        "maxLength": MAX_DATE_TIME_LENGTH,
        "description": "Only rows created after this instant (ISO 8601 with offset or Z; without one, UTC);"
        " not in the future.",
    }

    def offered(t: export_types.ExportType) -> bool:
        return t.offers_incremental if schedule else t.since_field is not None

    variants = []
    for dated in (False, True):
        for every_format in (True, False):
            for extra in (True, False):
                names = sorted(
                    name
                    for name, t in EXPORT_TYPES.items()
                    if t.requires_date_key == dated and t.every_format == every_format and offered(t) == extra
                )
                if not names:
                    continue
                variant = _request_variant(names, dated=dated, every_format=every_format, date_key=date_key)
                if schedule_fields is not None:
                    fields = {name: dict(field) for name, field in schedule_fields.items()}
                    if not extra:
                        fields["incremental"] = {
                            **fields["incremental"],
                            "enum": [False],
                            "description": "These types cannot be incremental.",
                        }
                    variant["properties"].update(fields)
                    variant["required"].append("cron")
                    if "example" in variant:
                        variant["example"] = {"exportType": "entries", "cron": "0 6 * * *", "timezone": "UTC"}
                else:
                    variant["properties"]["destinations"] = DESTINATIONS_SCHEMA
                    if extra:
                        variant["properties"]["since"] = since
                variants.append(variant)
    return variants


def _request_variant(names: list[str], *, dated: bool, every_format: bool, date_key: dict[str, Any]) -> dict[str, Any]:
    formats = list(FORMATS) if every_format else [DEFAULT_FORMAT]
    properties: dict[str, Any] = {"exportType": {"type": "string", "enum": names}}
    if dated:
        properties["dateKey"] = date_key
    properties["includeAllMarkets"] = {"type": "boolean"}
    properties["format"] = {
        "type": "string",
        "enum": formats,
        "default": DEFAULT_FORMAT,
        "description": "The file format (SPEC §3 Formats)"
        + ("." if every_format else ": these types are delivered as CSV only."),
    }
    variant: dict[str, Any] = {
        "type": "object",
        "required": ["exportType", "dateKey"] if dated else ["exportType"],
        "additionalProperties": False,
        "properties": properties,
    }
    if "entries" in names:
        variant["example"] = {"exportType": "entries", "format": "xlsx"}
    return variant


def _variants_schema(schema: dict[str, Any]) -> None:
    """The POST body's schema: its variants (what pydantic makes of the fields alone is looser)."""
    dated = sorted(name for name, t in EXPORT_TYPES.items() if t.requires_date_key)
    csv_only = sorted(name for name, t in EXPORT_TYPES.items() if not t.every_format)
    schema.clear()
    schema["description"] = (
        f"An export request; `dateKey` is required for, and only accepted for: {', '.join(dated)}. `format` is"
        f" one of {', '.join(FORMATS)} (default {DEFAULT_FORMAT}); these types are CSV only: {', '.join(csv_only)}."
    )
    schema["oneOf"] = export_request_variants()


class ExportRequest(Body):
    """An export POST: the export (type, dateKey, includeAllMarkets, format), `since` (SPEC §12), an instant
    not in the future, only for the types whose rows say when they were created (ExportType.since_field),
    and `destinations` (SPEC §13), whose ids the endpoint checks against the campaign's."""

    model_config = ConfigDict(json_schema_extra=_variants_schema)

    exportType: str
    dateKey: str | None = None
    includeAllMarkets: bool | None = None
    format: str = DEFAULT_FORMAT
    since: datetime | None = None
    destinations: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        """export_core's checks and `since`'s, in the order the API always made them; the fields then take
        what they let through."""
        data = decoded(data)
        if not isinstance(data, dict):
            raise invalid(NOT_AN_OBJECT, "body")
        fields = {k: v for k, v in data.items() if k not in ("since", "destinations")}
        try:
            request = parse_export_request(fields)
            destinations = parse_destinations(data.get("destinations", []))
        except (InvalidExportRequest, InvalidSchedule) as exc:
            raise invalid(str(exc), exc.field) from None
        fields["destinations"] = list(destinations)
        if "since" in data:
            try:
                fields["since"] = _since(data["since"], request.export_type)
            except ApiError as exc:
                raise invalid(exc.message, exc.payload) from None
        return fields

    def export_request(self) -> export_types.ExportRequest:
        return export_types.ExportRequest(
            EXPORT_TYPES[self.exportType], self.dateKey, self.includeAllMarkets, self.format
        )

    def options(self) -> RequestOptions:
        return RequestOptions(since=self.since, destinations=tuple(self.destinations))


def _since(value: object, export_type: export_types.ExportType) -> datetime:
    since = parse_date_time(value, "since")
    if since > utcnow():
        raise ApiError(400, "'since' must not be in the future.", "since")
    if export_type.since_field is None:
        offered = ", ".join(name for name, t in EXPORT_TYPES.items() if t.since_field is not None)
        raise ApiError(400, f"exportType '{export_type.name}' does not take 'since'; these do: {offered}.", "since")
    return since


class ExportListQuery(PageQuery):
    """A list page's filter and order (newest first unless asked otherwise)."""

    exportType: Annotated[str | None, WithJsonSchema({"type": "string", "enum": sorted(EXPORT_TYPES)})] = None
    sort: str = Field(default="created", json_schema_extra={"enum": list(SORT_FIELDS)})
    sortOrder: str = Field(default="desc", json_schema_extra={"enum": list(SORT_ORDERS)})

    @model_validator(mode="before")
    @classmethod
    def _type_first(cls, data: Any) -> Any:
        """The type is checked before the page, as it always was; its payload is empty."""
        export_type = data.get("exportType") if isinstance(data, dict) else None
        if isinstance(export_type, str) and export_type not in EXPORT_TYPES:
            raise invalid(f"Invalid export type: '{export_type[:100]}'.")
        return data

    @field_validator("sort", "sortOrder")
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        choices = tuple(SORT_FIELDS) if info.field_name == "sort" else SORT_ORDERS
        if value not in choices:
            raise invalid(f"'{info.field_name}' must be one of: {', '.join(choices)}.", value[:100])
        return value
