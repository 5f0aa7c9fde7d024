"""The registry of the 15 export types (SPEC §3): one entry per type, data only.

An entry says what the type reads (its source collection, the filter beyond the campaign, which
joins it needs), what it writes (columns, bucket, ACL, packaging, file name) and how it runs
(scratch policy, preliminary count). A purely filtered type is nothing more than its entry; a
type with logic of its own (entries, fanlist, waitlist, ...) also has a module in
`export_pipelines/exports/` (listed in `exports/registry.py`). Dagster-, polars- and
pymongoarrow-free, so the API can validate requests with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from export_core.formats import DEFAULT_FORMAT, FORMATS

Packaging = Literal["csv", "zip", "multi_csv"]
Source = Literal["entries", "scoring", "codes"]
Markets = Literal["none", "optional", "required"]  # required: an export without markets fails
Scratch = Literal["export", "run"]
# SPEC §12 `since`: the date that says when each source's row was created (scoring rows have none).
SINCE_FIELDS: Mapping[str, str] = {"entries": "date.created", "codes": "date.assigned"}


@dataclass(frozen=True)
class ExportType:
    name: str
    bucket: str  # logical bucket: exportsS3, scoringS3, vfScoringS3, sfmcS3
    source: Source = "entries"  # the collection whose documents become the rows
    # Filter beyond {"campaignId": ...}; a literal, so it never carries user data.
    match: Mapping[str, Any] = field(default_factory=dict)
    users: bool = False  # each row gets its user document (by the source's user id, SPEC §2)
    snapshots: bool = False  # names fall back to the entries' `user` snapshot joined by user id
    markets: Markets = "none"  # the campaign's markets joined to the rows by marketId
    packaging: Packaging = "csv"
    acl: str = "private"
    requires_date_key: bool = False
    preliminary_count: bool = True  # store the campaign's entry count when the export starts
    row_per_entry: bool = False  # one row per entry: the preliminary count is the progress total
    columns: tuple[str, ...] = ()  # the header, in order
    # Object name; {campaign} is the key-safe campaign name. The key adds the export id.
    file_name: str = "{campaign}.csv"
    segment_rows: bool = False  # split each CSV at MAX_ROWS_PER_EXPORTED_FILE rows
    # Column holding the user id of each row, recorded per export for CCPA deletion
    # (None: the rows are not about users).
    member_column: str | None = "userId"
    # "export": staged under the export id, kept until it FINISHED so a re-execution resumes
    # from the failed step; "run": a per-run directory removed when the run ends (SPEC §5).
    scratch: Scratch = "export"
    # SPEC §12: a schedule may send only the rows it has not delivered yet (`incremental`): single-file
    # types whose rows have a stable identity (docs/schedules.md lists them).
    incremental: bool = False

    @property
    def every_format(self) -> bool:
        """Single-file types are offered in every format; ZIP and multi-file types feed SFMC and
        partners' imports, which read CSV, and are CSV only."""
        return self.packaging == "csv"

    def offers_format(self, name: str) -> bool:
        return name in FORMATS and (name == DEFAULT_FORMAT or self.every_format)

    @property
    def offers_incremental(self) -> bool:
        return self.incremental and self.packaging == "csv"

    @property
    def since_field(self) -> str | None:
        """The date a `since` request (SPEC §12) filters on; None where the type does not offer it."""
        return SINCE_FIELDS.get(self.source) if self.offers_incremental else None


# Shared by the three reminder e-mail types: SPEC §3's required ten, then what SFMC imports use
# (docs/reminder-email.md): wording, presale date, region, business unit and the fan's ids.
REMINDER_EMAIL_COLUMNS = (
    "email",
    "firstName",
    "locale",
    "campaignName",
    "artistName",
    "eventName",
    "eventDate",
    "venue",
    "eventLink",
    "code",
    "presaleName",
    "presaleDate",
    "campaignType",
    "region",
    "mid",
    "countryCode",
    "marketId",
    "memberId",
)

# artistOptIn and livenationOptIn: the same rows shape, filtered on a different opt-in.
OPT_IN_COLUMNS = (
    "userId",
    "email",
    "firstName",
    "lastName",
    "marketId",
    "localeId",
    "postalCode",
    "marketName",
    "countryCode",
    "entryDate",
)

EXPORT_TYPES: dict[str, ExportType] = {
    t.name: t
    for t in (
        # -- entries (walking skeleton) --
        ExportType(
            name="entries",
            incremental=True,
            row_per_entry=True,
            markets="required",
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
        # (columns documented in docs/export-types-data.md; the entry count only previews entry/scoring types)
        ExportType(
            name="codes",
            incremental=True,
            source="codes",
            bucket="exportsS3",
            preliminary_count=False,
            file_name="{campaign} - Codes.csv",
            columns=("code", "marketId", "status", "assignedTo", "assignedAt", "waveDateKey"),
            member_column="assignedTo",
        ),
        ExportType(
            name="scoring",
            incremental=True,
            source="scoring",
            bucket="scoringS3",
            acl="bucket-owner-full-control",
            file_name="{campaign} - Scoring.csv",
            columns=(
                "memberId",
                "marketId",
                "score",
                "fanscore",
                "nudata",
                "verified",
                "selected",
                "rank",
                "locale",
                "countryCode",
                "lat",
                "lon",
                "postalCode",
            ),
            member_column="memberId",
        ),
        ExportType(
            name="codeAssignments",
            incremental=True,
            source="codes",
            match={"status": "assigned"},
            users=True,
            snapshots=True,
            markets="optional",
            bucket="exportsS3",
            preliminary_count=False,
            file_name="{campaign} - Code Assignments.csv",
            columns=(
                "code",
                "userId",
                "email",
                "marketId",
                "eventName",
                "assignedAt",
                "firstName",
                "lastName",
                "marketName",
                "eventDate",
                "venue",
                "waveDateKey",
            ),
        ),
        ExportType(
            name="artistOptIn",
            incremental=True,
            match={"optIns.allowMarketing": True},
            users=True,
            markets="optional",
            bucket="exportsS3",
            file_name="{campaign} - Artist Opt-In.csv",
            columns=OPT_IN_COLUMNS,
        ),
        ExportType(
            name="artistSmsOptIn",
            incremental=True,
            match={"optIns.allowSms": True},
            users=True,
            markets="optional",
            bucket="exportsS3",
            file_name="{campaign} - Artist SMS Opt-In.csv",
            columns=(
                "userId",
                "firstName",
                "lastName",
                "phoneNumber",
                "marketId",
                "phoneConfirmed",
                "marketName",
                "localeId",
                "countryCode",
                "entryDate",
            ),
        ),
        ExportType(
            name="livenationOptIn",
            incremental=True,
            match={"optIns.allowLiveNation": True},
            users=True,
            markets="optional",
            bucket="exportsS3",
            file_name="{campaign} - Live Nation Opt-In.csv",
            columns=OPT_IN_COLUMNS,
        ),
        ExportType(
            name="verifiedEntries",
            incremental=True,
            source="scoring",
            match={"verified": True},
            bucket="vfScoringS3",
            file_name="{campaign} - Verified Entries.csv",
            columns=(
                "memberId",
                "marketId",
                "score",
                "selected",
                "fanscore",
                "nudata",
                "rank",
                "locale",
                "countryCode",
            ),
            member_column="memberId",
        ),
        ExportType(
            name="codeWaves",
            source="codes",
            bucket="vfScoringS3",
            requires_date_key=True,
            preliminary_count=False,
            file_name="{campaign} - Code Wave.csv",
            columns=("code", "marketId", "assignedTo", "waveDateKey", "status", "assignedAt"),
            member_column="assignedTo",
        ),
        ExportType(
            name="fanlist",
            users=True,
            markets="required",
            bucket="exportsS3",
            file_name="{campaign} - Fan List.csv",
            columns=("userId", "email", "firstName", "lastName", "markets", "marketNames", "postalCode", "countryCode"),
        ),
        ExportType(
            name="waitlist",
            source="scoring",
            match={"selected": {"$ne": True}},
            users=True,
            snapshots=True,
            bucket="exportsS3",
            file_name="{campaign} - Waitlist.csv",
            columns=(
                "memberId",
                "email",
                "marketId",
                "locale",
                "score",
                "firstName",
                "lastName",
                "countryCode",
                "rank",
                "fanscore",
            ),
            member_column="memberId",
        ),
        ExportType(
            name="promoterEmailOptIn",
            match={"optIns.allowPromoter": True},
            users=True,
            markets="required",
            bucket="exportsS3",
            packaging="zip",
            file_name="{campaign} - Promoter Email Opt-In.zip",
            columns=(
                "userId",
                "email",
                "firstName",
                "lastName",
                "marketId",
                "promoterName",
                "promoterId",
                "marketName",
                "localeId",
                "postalCode",
                "countryCode",
                "entryDate",
            ),
        ),
        # -- reminder e-mails (SFMC) --
        ExportType(
            name="reminderEmail",
            source="scoring",
            match={"selected": True},
            users=True,
            markets="required",
            scratch="run",
            bucket="exportsS3",
            packaging="zip",
            columns=REMINDER_EMAIL_COLUMNS,
            file_name="Combined - {campaign} ASU - Reminder Email Data.zip",
            segment_rows=True,
            member_column="memberId",
        ),
        ExportType(
            name="reminderEmailSample",
            source="scoring",
            match={"selected": True},
            users=True,
            markets="required",
            scratch="run",
            bucket="exportsS3",
            packaging="zip",
            columns=REMINDER_EMAIL_COLUMNS,
            file_name="Combined - {campaign} ASU - Reminder Email Data (Sample).zip",
            segment_rows=True,
            member_column="memberId",
        ),
        ExportType(
            name="autoReminderEmail",
            source="scoring",
            match={"selected": True},
            users=True,
            markets="required",
            scratch="run",
            bucket="sfmcS3",
            packaging="multi_csv",  # one CSV per region, keys from reminder_email.object_key
            columns=REMINDER_EMAIL_COLUMNS,
            member_column="memberId",
        ),
    )
}


def get_export_type(name: str) -> ExportType | None:
    return EXPORT_TYPES.get(name)


class InvalidExportRequest(ValueError):
    """A request body that cannot become an export; the message is shown to the user, `field` is the one to blame."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ExportRequest:
    export_type: ExportType
    date_key: str | None
    include_all_markets: bool | None
    format: str = DEFAULT_FORMAT  # SPEC §3 "Formats"; part of the duplicate rule (SPEC §4)


MAX_DATE_KEY_DIGITS = 16  # SPEC §6; epoch millis have 13 today
REQUEST_FIELDS = frozenset({"exportType", "dateKey", "includeAllMarkets", "format"})


def parse_export_request(body: object) -> ExportRequest:
    """Validate a POST body (SPEC §6) into a request, or raise InvalidExportRequest."""
    if not isinstance(body, dict):
        raise InvalidExportRequest("Request body must be a JSON object.")
    unknown = sorted(str(k) for k in body if k not in REQUEST_FIELDS)
    if unknown:
        # Strict on purpose: a misspelt `datekey` must not silently queue a different export.
        raise InvalidExportRequest(f"Unknown field in the request body: '{unknown[0][:100]}'.", unknown[0][:100])
    name = body.get("exportType")
    export_type = EXPORT_TYPES.get(name) if isinstance(name, str) else None
    if export_type is None:
        shown = name if isinstance(name, str) else ("" if name is None else str(name))
        raise InvalidExportRequest(f"Invalid export type: '{shown[:100]}'.", "exportType")
    # A field that is present counts, even as null: `{"dateKey": null}` is not "no dateKey".
    date_key = body.get("dateKey")
    if "dateKey" in body and not export_type.requires_date_key:
        raise InvalidExportRequest(f"dateKey is not accepted for exportType '{export_type.name}'.", "dateKey")
    if "dateKey" in body and not (
        isinstance(date_key, str) and date_key.isascii() and date_key.isdigit() and len(date_key) <= MAX_DATE_KEY_DIGITS
    ):
        raise InvalidExportRequest(
            f"dateKey must be a numeric string of at most {MAX_DATE_KEY_DIGITS} digits (epoch milliseconds).", "dateKey"
        )
    if export_type.requires_date_key and date_key is None:
        raise InvalidExportRequest(f"dateKey is required for exportType '{export_type.name}'.", "dateKey")
    include_all_markets = body.get("includeAllMarkets")
    if "includeAllMarkets" in body and not isinstance(include_all_markets, bool):
        raise InvalidExportRequest("includeAllMarkets must be true or false.", "includeAllMarkets")
    fmt = body.get("format", DEFAULT_FORMAT)
    if not isinstance(fmt, str) or fmt not in FORMATS:
        shown = fmt if isinstance(fmt, str) else json.dumps(fmt)
        formats = ", ".join(list(FORMATS)[:-1]) + f" or {list(FORMATS)[-1]}"
        raise InvalidExportRequest(f"Invalid format: '{shown[:100]}' (it must be {formats}).", "format")
    if not export_type.offers_format(fmt):
        raise InvalidExportRequest(f"exportType '{export_type.name}' is delivered as CSV only, not as {fmt}.", "format")
    return ExportRequest(export_type, date_key, include_all_markets, fmt)
