"""Schedule times (SPEC §12) across the 2027 DST changes of America/New_York and Europe/London.

New York: 2027-03-14 02:00 EST → 03:00 EDT (07:00Z); 2027-11-07 02:00 EDT → 01:00 EST (06:00Z).
London: 2027-03-28 01:00 GMT → 02:00 BST (01:00Z); 2027-10-31 02:00 BST → 01:00 GMT (01:00Z).
A wall time that does not exist runs once at the end of the gap; one that occurs twice runs once, at its
first occurrence (every wall time of the repeated hour in its first pass only).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from export_core.schedules import (
    InvalidSchedule,
    check_interval,
    next_runs,
    parse_cron,
    parse_patch,
    parse_schedule,
    parse_timezone,
    runs_after,
    runs_between,
    shortest_interval_minutes,
)

NY, LONDON = "America/New_York", "Europe/London"


def z(text: str) -> datetime:
    """`2027-03-14T07:00` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def runs(cron: str, timezone: str, after: str, count: int) -> list[datetime]:
    found = []
    for at in runs_after(cron, timezone, z(after)):
        found.append(at)
        if len(found) == count:
            return found
    raise AssertionError("runs_after ended")


def tick_by_tick(cron: str, timezone: str, after: str, count: int) -> list[datetime]:
    """What the sensor does: each evaluation starts after the tick handled last."""
    found, last = [], z(after)
    for _ in range(count):
        last = next(runs_after(cron, timezone, last))
        found.append(last)
    return found


CASES = [
    # (zone, cron, after (UTC), expected runs (UTC))
    # -- New York, spring forward --
    (NY, "0 6 * * *", "2027-03-13T00:00", ["2027-03-13T11:00", "2027-03-14T10:00", "2027-03-15T10:00"]),
    (NY, "30 2 * * *", "2027-03-13T00:00", ["2027-03-13T07:30", "2027-03-14T07:00", "2027-03-15T06:30"]),
    (NY, "0 * * * *", "2027-03-14T05:00", ["2027-03-14T06:00", "2027-03-14T07:00", "2027-03-14T08:00"]),
    (NY, "*/15 * * * *", "2027-03-14T06:30", ["2027-03-14T06:45", "2027-03-14T07:00", "2027-03-14T07:15"]),
    # -- New York, fall back: 01:00-01:59 happen twice; only the first pass (EDT, 05:00-05:59Z) runs --
    (NY, "30 1 * * *", "2027-11-06T00:00", ["2027-11-06T05:30", "2027-11-07T05:30", "2027-11-08T06:30"]),
    (NY, "0 6 * * *", "2027-11-06T00:00", ["2027-11-06T10:00", "2027-11-07T11:00", "2027-11-08T11:00"]),
    (NY, "0 * * * *", "2027-11-07T04:00", ["2027-11-07T05:00", "2027-11-07T07:00", "2027-11-07T08:00"]),
    (
        NY,
        "*/15 * * * *",
        "2027-11-07T04:45",
        ["2027-11-07T05:00", "2027-11-07T05:15", "2027-11-07T05:30", "2027-11-07T05:45", "2027-11-07T07:00"],
    ),
    # -- London, spring forward: 01:00-01:59 GMT do not exist --
    (LONDON, "30 1 * * *", "2027-03-27T00:00", ["2027-03-27T01:30", "2027-03-28T01:00", "2027-03-29T00:30"]),
    (LONDON, "0 6 * * *", "2027-03-27T00:00", ["2027-03-27T06:00", "2027-03-28T05:00", "2027-03-29T05:00"]),
    (LONDON, "0 * * * *", "2027-03-28T00:00", ["2027-03-28T01:00", "2027-03-28T02:00", "2027-03-28T03:00"]),
    (LONDON, "*/15 * * * *", "2027-03-28T00:30", ["2027-03-28T00:45", "2027-03-28T01:00", "2027-03-28T01:15"]),
    # -- London, fall back: 01:00-01:59 happen twice; only the first pass (BST, 00:00-00:59Z) runs --
    (LONDON, "30 1 * * *", "2027-10-30T00:00", ["2027-10-30T00:30", "2027-10-31T00:30", "2027-11-01T01:30"]),
    (LONDON, "0 6 * * *", "2027-10-30T00:00", ["2027-10-30T05:00", "2027-10-31T06:00", "2027-11-01T06:00"]),
    (LONDON, "0 * * * *", "2027-10-30T23:00", ["2027-10-31T00:00", "2027-10-31T02:00", "2027-10-31T03:00"]),
    (
        LONDON,
        "*/15 * * * *",
        "2027-10-30T23:45",
        ["2027-10-31T00:00", "2027-10-31T00:15", "2027-10-31T00:30", "2027-10-31T00:45", "2027-10-31T02:00"],
    ),
]


@pytest.mark.parametrize(("timezone", "cron", "after", "expected"), CASES)
def test_runs_across_dst_changes(timezone: str, cron: str, after: str, expected: list[str]):
    assert runs(cron, timezone, after, len(expected)) == [z(e) for e in expected]
    assert tick_by_tick(cron, timezone, after, len(expected)) == [z(e) for e in expected]


def test_evaluating_inside_the_repeated_hour_runs_nothing_more_in_its_second_pass():
    # 01:10 EST (06:10Z) is in the second pass: 01:15-01:45 ran in the first; next is 02:00 EST.
    assert runs("*/15 * * * *", NY, "2027-11-07T06:10", 1) == [z("2027-11-07T07:00")]
    assert runs("0 * * * *", LONDON, "2027-10-31T01:30", 1) == [z("2027-10-31T02:00")]


def test_a_whole_day_of_quarter_hours_across_the_changes():
    # Spring forward: 96 wall times, the four of 02:00-02:45 and 03:00 are one run: 92 runs in 23 hours.
    spring = runs_between("*/15 * * * *", NY, z("2027-03-14T04:59"), z("2027-03-15T03:59"))
    assert len(spring) == 92 and len(set(spring)) == 92
    # Fall back: 96 wall times in 25 hours, each once; the hour 06:00-06:59Z (second pass) has none.
    fall = runs_between("*/15 * * * *", NY, z("2027-11-07T03:59"), z("2027-11-08T04:59"))
    assert len(fall) == 96
    assert not [at for at in fall if at.hour == 6 and at.date() == z("2027-11-07T00:00").date()]


def test_next_runs_shows_utc_and_local_time_with_its_offset():
    shown = next_runs("30 1 * * *", NY, z("2027-11-06T12:00"), count=2)
    assert shown == [
        {"at": "2027-11-07T05:30:00Z", "local": "2027-11-07T01:30:00-04:00"},
        {"at": "2027-11-08T06:30:00Z", "local": "2027-11-08T01:30:00-05:00"},
    ]
    assert len(next_runs("0 6 * * *", "UTC", z("2027-01-01T00:00"))) == 5
    spring = next_runs("30 2 * * *", NY, z("2027-03-14T00:00"), count=1)
    assert spring == [{"at": "2027-03-14T07:00:00Z", "local": "2027-03-14T03:00:00-04:00"}]


def test_the_shortest_interval_of_a_cron():
    assert shortest_interval_minutes("* * * * *") == 1
    assert shortest_interval_minutes("*/5 * * * *") == 5
    assert shortest_interval_minutes("0,59 * * * *") == 1
    assert shortest_interval_minutes("0 6 * * *") == 24 * 60
    assert shortest_interval_minutes("5,55 0,23 * * *") == 10  # 23:55 → 00:05 the next day
    assert shortest_interval_minutes("5,55 0,23 * * 1") == 50  # no two Mondays in a row
    assert shortest_interval_minutes("55 23 31 12 *") == 24 * 60
    check_interval("*/5 * * * *", 5)
    with pytest.raises(InvalidSchedule) as refused:
        check_interval("*/2 * * * *", 5)
    assert refused.value.field == "cron" and "SCHEDULE_MIN_INTERVAL_MINUTES" in str(refused.value)


@pytest.mark.parametrize(
    "cron", ["", "* * * *", "* * * * * *", "61 * * * *", "0 25 * * *", "0 0 30 2 *", "x y z w v", 5, None]
)
def test_a_cron_the_parser_refuses_names_cron(cron: object):
    with pytest.raises(InvalidSchedule) as refused:
        parse_cron(cron)
    assert refused.value.field == "cron" and "'cron'" in str(refused.value)


def test_cron_is_normalised_and_time_zones_are_iana_names():
    assert parse_cron("  0   6 * *  MON-FRI ") == "0 6 * * MON-FRI"
    assert parse_timezone("Europe/London") == "Europe/London"
    for bad in ("Mars/Olympus", "", "../etc/passwd", 3):
        with pytest.raises(InvalidSchedule) as refused:
            parse_timezone(bad)
        assert refused.value.field == "timezone"


def _field(body: dict, min_interval: int = 5) -> str:
    with pytest.raises(InvalidSchedule) as refused:
        parse_schedule(body, min_interval_minutes=min_interval)
    return refused.value.field


def test_schedule_fields_defaults_and_refusals():
    plain = parse_schedule({"exportType": "entries", "cron": "0 6 * * *"}, min_interval_minutes=5)
    assert (plain.timezone, plain.incremental, plain.skip_empty, plain.paused, plain.format) == (
        "UTC",
        False,
        False,
        False,
        "csv",
    )
    incremental = parse_schedule(
        {"exportType": "codes", "cron": "0 6 * * *", "incremental": True, "timezone": NY}, min_interval_minutes=5
    )
    assert incremental.skip_empty is True and incremental.fields()["timezone"] == NY
    assert _field({"exportType": "nope", "cron": "0 6 * * *"}) == "exportType"
    assert _field({"exportType": "entries"}) == "cron"
    assert _field({"exportType": "entries", "cron": "* * * * *"}) == "cron"
    assert _field({"exportType": "entries", "cron": "0 6 * * *", "timezone": "Nowhere/Land"}) == "timezone"
    assert _field({"exportType": "fanlist", "cron": "0 6 * * *", "incremental": True}) == "incremental"
    assert _field({"exportType": "reminderEmail", "cron": "0 6 * * *", "format": "parquet"}) == "format"
    assert _field({"exportType": "entries", "cron": "0 6 * * *", "dateKey": "1"}) == "dateKey"
    assert _field({"exportType": "codeWaves", "cron": "0 6 * * *"}) == "dateKey"
    assert _field({"exportType": "entries", "cron": "0 6 * * *", "cronn": 1}) == "cronn"
    assert _field({"exportType": "entries", "cron": "0 6 * * *", "destinations": "d1"}) == "destinations"
    assert _field({"exportType": "entries", "cron": "0 6 * * *", "skipEmpty": "yes"}) == "skipEmpty"
    assert parse_schedule({"exportType": "entries", "cron": "* * * * *"}, min_interval_minutes=1).cron == "* * * * *"


def test_a_patch_changes_only_what_spec_allows():
    assert parse_patch({"paused": True, "cron": "0 7 * * *"}, min_interval_minutes=5) == {
        "paused": True,
        "cron": "0 7 * * *",
    }
    for body, field in (({"exportType": "codes"}, "exportType"), ({"cron": "*/1 * * * *"}, "cron")):
        with pytest.raises(InvalidSchedule) as refused:
            parse_patch(body, min_interval_minutes=5)
        assert refused.value.field == field
