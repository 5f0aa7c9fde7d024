"""The registry of the 15 export types (SPEC §3): one entry per type, data only.

Each entry names the module that produces its rows (imported lazily, so the API can
validate requests without loading polars or dagster), its columns, bucket, ACL and
packaging, and what a request for it must carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Packaging = Literal["csv", "zip", "multi_csv"]


@dataclass(frozen=True)
class ExportType:
    name: str
    module: str  # export_pipelines.exports.<module>: defines extract() and transform()
    bucket: str  # logical bucket: exportsS3, scoringS3, vfScoringS3, sfmcS3
    packaging: Packaging = "csv"
    acl: str = "private"
    requires_date_key: bool = False
    preliminary_count: bool = True  # store the campaign's entry count when the export starts
    columns: tuple[str, ...] = ()  # the header, in order
    # Object name; {campaign} is the key-safe campaign name. The key adds the export id.
    file_name: str = "{campaign}.csv"
    segment_rows: bool = False  # split each CSV at MAX_ROWS_PER_EXPORTED_FILE rows
    # Column holding the user id of each row, recorded per export for CCPA deletion
    # (None: the rows are not about users).
    member_column: str | None = "userId"


EXPORT_TYPES: dict[str, ExportType] = {
    t.name: t
    for t in (
        # -- entries (walking skeleton) --
        ExportType(
            name="entries",
            module="entries",
            bucket="exportsS3",
            file_name="{campaign} - Entries.csv",
            columns=(
                "userId",
                "email",
                "firstName",
                "lastName",
                "phoneNumber",
                "postalCode",
                "countryCode",
                "marketId",
                "marketName",
                "marketCity",
                "marketState",
                "marketCountryCode",
                "localeId",
                "entryDate",
                "allowMarketing",
                "allowLiveNation",
                "allowPromoter",
                "allowSms",
                "phoneConfirmed",
                "codes",
                "isAdditionalMarket",
                "fields",
            ),
        ),
        # -- data exports: codes, scoring, code assignments, opt-ins, waves, fan list, waitlist, promoters --
        # -- reminder e-mails (SFMC) --
    )
}


def get_export_type(name: str) -> ExportType | None:
    return EXPORT_TYPES.get(name)


class InvalidExportRequest(ValueError):
    """A request body that cannot become an export; the message is shown to the user."""


@dataclass(frozen=True)
class ExportRequest:
    export_type: ExportType
    date_key: str | None
    include_all_markets: bool | None


def parse_export_request(body: object) -> ExportRequest:
    """Validate a POST body (SPEC §6) into a request, or raise InvalidExportRequest."""
    if not isinstance(body, dict):
        raise InvalidExportRequest("Request body must be a JSON object.")
    name = body.get("exportType")
    export_type = EXPORT_TYPES.get(name) if isinstance(name, str) else None
    if export_type is None:
        shown = name if isinstance(name, str) else ("" if name is None else str(name))
        raise InvalidExportRequest(f"Invalid export type: '{shown[:100]}'.")
    date_key = body.get("dateKey")
    if date_key is not None and (not isinstance(date_key, str) or not date_key.isascii() or not date_key.isdigit()):
        raise InvalidExportRequest("dateKey must be a numeric string (epoch milliseconds).")
    if export_type.requires_date_key and date_key is None:
        raise InvalidExportRequest(f"dateKey is required for exportType '{export_type.name}'.")
    include_all_markets = body.get("includeAllMarkets")
    if include_all_markets is not None and not isinstance(include_all_markets, bool):
        raise InvalidExportRequest("includeAllMarkets must be true or false.")
    return ExportRequest(export_type, date_key, include_all_markets)
