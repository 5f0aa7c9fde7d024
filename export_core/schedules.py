"""Schedules (SPEC §12): the cron and time-zone rules, and the validation of a schedule's fields.

Dagster- and pymongo-free; the store is export_core/schedule_store.py.

Times. cronsim parses the five-field cron and walks the *wall clock* (naive datetimes, no time
zone), so it never sees a DST change; this module maps each wall time to an instant in the
schedule's IANA zone (zoneinfo):

- a wall time that exists once is that instant;
- a wall time that occurs twice (fall back) is its first occurrence (`fold=0`): every wall time
  of the repeated hour runs once, in the first pass (`*/15` runs 01:00, 01:15, 01:30, 01:45 EDT
  and nothing in the second pass; the next run is 02:00 EST);
- a wall time that does not exist (spring forward) runs at the first valid instant after it,
  the end of the gap (02:30 → 03:00 EDT); wall times that land on the same instant run once
  there (`*/15`'s 02:00–02:45 and 03:00 are one run at 03:00 EDT).

cronsim is used on naive datetimes on purpose: given a zone it follows Debian cron, which runs
hourly and more frequent jobs in both passes of a repeated hour (not SPEC §12).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from export_core.export_types import EXPORT_TYPES, ExportType, InvalidExportRequest, parse_export_request
from export_core.formats import DEFAULT_FORMAT

NEXT_RUNS = 5
MAX_CRON_LENGTH = 200
MAX_TIMEZONE_LENGTH = 64
MAX_DESTINATIONS = 10
MINUTE = timedelta(minutes=1)
DAY_MINUTES = 24 * 60
# Matching days looked at for two in a row (the minimum interval across midnight): 4 years and a day
# cover every day-of-month / day-of-week / month combination, leap days included.
DAYS_SEARCHED = 4 * 366

REQUEST_FIELDS = ("exportType", "format", "dateKey", "includeAllMarkets")
SCHEDULE_FIELDS = ("cron", "timezone", "incremental", "skipEmpty", "destinations", "paused")
# SPEC §12: what PATCH may change; the saved request (type, format, ...) and `incremental` stay.
PATCH_FIELDS = ("cron", "timezone", "paused", "skipEmpty", "destinations")


class InvalidSchedule(ValueError):
    """A schedule the service refuses; `field` is the one to blame (a 400 names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- cron and time zone ---------------------------------------------------------------------------


def parse_cron(value: object) -> str:
    """The cron expression, normalised to single spaces; InvalidSchedule('cron') if cronsim refuses it."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CRON_LENGTH:
        raise InvalidSchedule("cron", "'cron' must be a cron expression of five fields, e.g. '0 6 * * *'.")
    fields = value.split()
    if len(fields) != 5:
        raise InvalidSchedule(
            "cron", f"'cron' must have five fields (minute hour day-of-month month day-of-week), not {len(fields)}."
        )
    expression = " ".join(fields)
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise InvalidSchedule("cron", f"'cron' is not a valid cron expression: {str(exc).lower()}.") from None
    return expression


def parse_timezone(value: object) -> str:
    """An IANA time zone name zoneinfo knows; InvalidSchedule('timezone') otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_TIMEZONE_LENGTH:
        raise InvalidSchedule("timezone", "'timezone' must be an IANA time zone name, e.g. 'America/New_York'.")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("timezone", f"Unknown time zone '{value[:MAX_TIMEZONE_LENGTH]}'.") from None
    return value


def instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall time runs at in `zone`: its first occurrence, or the end of its DST gap."""
    local = wall.replace(tzinfo=zone, fold=0)
    while _imaginary(local):
        local += MINUTE  # naive arithmetic on the wall clock: gaps end on a whole minute
    return local.astimezone(UTC)


def _imaginary(local: datetime) -> bool:
    """The wall time does not exist in its zone (it falls in a spring-forward gap)."""
    return local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) != local.replace(tzinfo=None)


def runs_after(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The run instants (UTC, strictly increasing) strictly after `after` (naive: UTC), up to year 9999."""
    zone = ZoneInfo(timezone)
    last = after.replace(tzinfo=UTC) if after.tzinfo is None else after.astimezone(UTC)
    # Wall time → instant never goes backwards, so no wall time before `after`'s runs after it; one after it
    # may run before it (`after` in the second pass of a repeated hour): the comparison drops those.
    try:
        start = last.astimezone(zone).replace(tzinfo=None)
        for wall in CronSim(cron, start):
            at = instant(wall, zone)
            if at > last:
                last = at
                yield at
    except OverflowError:  # datetime's calendar ends (a preview `?from=` near year 9999, or year 1 in the zone)
        return


def runs_between(cron: str, timezone: str, after: datetime, until: datetime) -> list[datetime]:
    """The run instants in (after, until]."""
    found: list[datetime] = []
    for at in runs_after(cron, timezone, after):
        if at > until:
            break
        found.append(at)
    return found


def next_runs(cron: str, timezone: str, after: datetime, count: int = NEXT_RUNS) -> list[dict[str, str]]:
    """`nextRuns` (SPEC §12): the next `count` runs after `after`, each `{at: UTC ISO, local: ISO with offset}`."""
    zone = ZoneInfo(timezone)
    shown: list[dict[str, str]] = []
    for at in runs_after(cron, timezone, after):
        # isoformat, not strftime: glibc's %Y does not pad years before 1000 (a preview `?from=0257-…`).
        utc = at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
        shown.append({"at": utc, "local": at.astimezone(zone).isoformat()})
        if len(shown) == count:
            break
    return shown


def shortest_interval_minutes(cron: str) -> int:
    """The shortest wall-clock interval between two consecutive runs of `cron`, in minutes (capped at a day).

    Hour and minute fields do not depend on the day, so the runs of any matching day are the same
    minutes of the day: the shortest interval is between two of them, or across midnight when two
    matching days follow each other. (A spring-forward gap can bring two runs closer once a year,
    e.g. `50 1,2 * * *` runs 01:50 and 03:00 that day; that is not counted.)
    """
    first = next(CronSim(cron, datetime(2000, 1, 1)))
    day = first.replace(hour=0, minute=0, second=0)
    minutes: list[int] = []
    for wall in CronSim(cron, day - timedelta(seconds=1)):
        if wall.date() != day.date():
            break
        minutes.append(wall.hour * 60 + wall.minute)
    within = min((b - a for a, b in zip(minutes, minutes[1:], strict=False)), default=DAY_MINUTES)
    across = DAY_MINUTES - minutes[-1] + minutes[0]
    if across >= within or not _consecutive_days(cron, day):
        return within
    return across


def _consecutive_days(cron: str, day: datetime) -> bool:
    """Two days in a row both have runs (searched from `day` over DAYS_SEARCHED matching days)."""
    previous = day.date()
    end_of_day = day + timedelta(days=1) - timedelta(seconds=1)
    for _ in range(DAYS_SEARCHED):
        wall = next(CronSim(cron, end_of_day), None)
        if wall is None:
            return False
        if wall.date() - previous == timedelta(days=1):
            return True
        previous = wall.date()
        end_of_day = wall.replace(hour=23, minute=59, second=59)
    return False


def check_interval(cron: str, min_minutes: int) -> None:
    """InvalidSchedule('cron') when two consecutive runs can be closer than `min_minutes`."""
    shortest = shortest_interval_minutes(cron)
    if shortest < min_minutes:
        raise InvalidSchedule(
            "cron",
            f"'cron' runs every {shortest} minute(s) at times; schedules may run at most every {min_minutes} minutes"
            " (SCHEDULE_MIN_INTERVAL_MINUTES).",
        )


# -- the schedule's fields ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRequest:
    """A schedule as POST gives it, checked (SPEC §12); `destinations` are ids, checked by their store."""

    export_type: ExportType
    format: str
    date_key: str | None
    include_all_markets: bool | None
    cron: str
    timezone: str
    incremental: bool
    skip_empty: bool
    destinations: tuple[str, ...]
    paused: bool

    def fields(self) -> dict[str, Any]:
        """The stored document's fields (camelCase, as the API shows them)."""
        fields: dict[str, Any] = {
            "exportType": self.export_type.name,
            "format": self.format,
            "cron": self.cron,
            "timezone": self.timezone,
            "incremental": self.incremental,
            "skipEmpty": self.skip_empty,
            "destinations": list(self.destinations),
            "paused": self.paused,
        }
        if self.date_key is not None:
            fields["dateKey"] = self.date_key
        if self.include_all_markets is not None:
            fields["includeAllMarkets"] = self.include_all_markets
        return fields


def _bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise InvalidSchedule(field, f"'{field}' must be true or false.")
    return value


def parse_destinations(value: object) -> tuple[str, ...]:
    """A list of destination ids (SPEC §13), without repeats."""
    if (
        not isinstance(value, list)
        or len(value) > MAX_DESTINATIONS
        or not all(isinstance(d, str) and 0 < len(d) <= 100 for d in value)
    ):
        raise InvalidSchedule(
            "destinations", f"'destinations' must be a list of at most {MAX_DESTINATIONS} destination ids."
        )
    if len(set(value)) != len(value):
        raise InvalidSchedule("destinations", "'destinations' must not repeat an id.")
    return tuple(value)


def _unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise InvalidSchedule(unknown[0][:100], f"Unknown field in the request body: '{unknown[0][:100]}'.")


def parse_schedule(body: object, *, min_interval_minutes: int) -> ScheduleRequest:
    """Validate a POST body (SPEC §12) into a ScheduleRequest, or raise InvalidSchedule naming the field."""
    if not isinstance(body, dict):
        raise InvalidSchedule("body", "Request body must be a JSON object.")
    _unknown(body, REQUEST_FIELDS + SCHEDULE_FIELDS)
    try:
        request = parse_export_request({k: body[k] for k in REQUEST_FIELDS if k in body})
    except InvalidExportRequest as exc:
        raise InvalidSchedule(exc.field, str(exc)) from None
    if "cron" not in body:
        raise InvalidSchedule("cron", "'cron' is required, e.g. '0 6 * * *' for every day at 06:00.")
    cron = parse_cron(body["cron"])
    check_interval(cron, min_interval_minutes)
    timezone = parse_timezone(body.get("timezone", "UTC"))
    incremental = _bool(body, "incremental", False)
    if incremental and not request.export_type.offers_incremental:
        offered = ", ".join(t.name for t in EXPORT_TYPES.values() if t.offers_incremental)
        raise InvalidSchedule(
            "incremental", f"exportType '{request.export_type.name}' cannot be incremental; these can: {offered}."
        )
    return ScheduleRequest(
        export_type=request.export_type,
        format=request.format or DEFAULT_FORMAT,
        date_key=request.date_key,
        include_all_markets=request.include_all_markets,
        cron=cron,
        timezone=timezone,
        incremental=incremental,
        skip_empty=_bool(body, "skipEmpty", incremental),
        destinations=parse_destinations(body.get("destinations", [])),
        paused=_bool(body, "paused", False),
    )


def parse_patch(body: object, *, min_interval_minutes: int) -> dict[str, Any]:
    """The fields a PATCH body changes (SPEC §12: cron, timezone, paused, skipEmpty, destinations), checked."""
    if not isinstance(body, dict):
        raise InvalidSchedule("body", "Request body must be a JSON object.")
    _unknown(body, PATCH_FIELDS)
    changes: dict[str, Any] = {}
    if "cron" in body:
        changes["cron"] = parse_cron(body["cron"])
        check_interval(changes["cron"], min_interval_minutes)
    if "timezone" in body:
        changes["timezone"] = parse_timezone(body["timezone"])
    for field in ("paused", "skipEmpty"):
        if field in body:
            changes[field] = _bool(body, field, False)
    if "destinations" in body:
        changes["destinations"] = list(parse_destinations(body["destinations"]))
    return changes
