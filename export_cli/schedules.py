"""`schedules add|list|show|pause|resume|run|remove`: saved export requests that run on a cron."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from export_cli.api import EXIT_OK, Api, campaign_path, fields_of
from export_cli.commands import json_flag, subcommand
from export_cli.exports import FORMAT_CHOICES
from export_cli.output import say, say_json, summary, table
from export_core.schedules import REQUEST_FIELDS, SCHEDULE_FIELDS


def _path(campaign_id: str, schedule_id: str | None = None, action: str = "") -> str:
    return campaign_path(campaign_id, "schedules", schedule_id, action)


def _request_text(schedule: dict[str, Any]) -> str:
    """`entries csv, incremental, skip empty`: the saved request in a few words."""
    parts = [f"{schedule.get('exportType')} {schedule.get('format')}"]
    if schedule.get("dateKey") is not None:
        parts.append(f"dateKey {schedule['dateKey']}")
    if schedule.get("includeAllMarkets"):
        parts.append("all markets")
    if schedule.get("incremental"):
        parts.append("incremental")
    if schedule.get("skipEmpty"):
        parts.append("skip empty")
    return ", ".join(parts)


def _next_run(schedule: dict[str, Any]) -> str:
    runs = schedule.get("nextRuns") or []
    return str(runs[0]["local"]) if runs else "none (paused)"


def cmd_add(api: Api, args: argparse.Namespace) -> int:
    body = fields_of(vars(args), REQUEST_FIELDS + SCHEDULE_FIELDS)
    created = api.request("POST", _path(args.campaign_id), json=body)
    if args.json:
        say_json(created)
        return EXIT_OK
    say(f"schedule {created['id']}  {_request_text(created)}  {created['cron']} {created['timezone']}")
    say(f"next run {_next_run(created)}")
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", _path(args.campaign_id))
    if args.json:
        say_json(found)
        return EXIT_OK
    rows = [
        [str(s["id"]), _request_text(s), str(s["cron"]), str(s["timezone"]), "paused" if s["paused"] else "active",
         _next_run(s)]
        for s in found["schedules"]
    ]  # fmt: skip
    table(["id", "request", "cron", "timezone", "state", "next run"], rows, f"{len(rows)} schedule(s)")
    return EXIT_OK


def cmd_show(api: Api, args: argparse.Namespace) -> int:
    params = {"from": args.from_} if args.from_ else None
    schedule = api.request("GET", _path(args.campaign_id, args.schedule_id), params=params)
    if args.json:
        say_json(schedule)
        return EXIT_OK
    state = f"paused: {schedule.get('pausedReason') or 'paused'}" if schedule["paused"] else "active"
    say(f"schedule {schedule['id']}")
    say(f"  request       {_request_text(schedule)}")
    say(f"  cron          {schedule['cron']} ({schedule['timezone']})")
    say(f"  state         {state}")
    say(f"  destinations  {', '.join(schedule.get('destinations') or []) or 'none'}")
    say(f"  created       {schedule.get('createdAt')} by {schedule.get('createdBy')}")
    say("next runs" + (f" after {args.from_}" if args.from_ else ""))
    for run in schedule["nextRuns"] or [{"local": "none (paused)", "at": ""}]:
        say(f"  {run['local']}  {run['at']}".rstrip())
    say("runs, newest first")
    rows = [
        [str(run["scheduledFor"]), str(run["outcome"]) + (" (manual)" if run.get("manual") else ""),
         str(run["exportId"] or ""), "" if run["count"] is None else str(run["count"])]
        for run in schedule["runs"]
    ]  # fmt: skip
    table(["scheduled for", "outcome", "export", "rows"], rows, f"{len(rows)} run(s)")
    return EXIT_OK


def _set_paused(api: Api, args: argparse.Namespace, paused: bool) -> dict[str, Any]:
    return dict(api.request("PATCH", _path(args.campaign_id, args.schedule_id), json={"paused": paused}))


def cmd_pause(api: Api, args: argparse.Namespace) -> int:
    _set_paused(api, args, True)
    say(f"paused schedule {args.schedule_id}")
    return EXIT_OK


def cmd_resume(api: Api, args: argparse.Namespace) -> int:
    schedule = _set_paused(api, args, False)
    say(f"resumed schedule {args.schedule_id}; next run {_next_run(schedule)}")
    return EXIT_OK


def cmd_run(api: Api, args: argparse.Namespace) -> int:
    record = api.request("POST", _path(args.campaign_id, args.schedule_id, "run"))
    say(f"queued {summary(record)}")
    return EXIT_OK


def cmd_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", _path(args.campaign_id, args.schedule_id))
    say(f"removed schedule {args.schedule_id} (its exports stay)")
    return EXIT_OK


def add_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    sub = add_parser("schedules", help="a campaign's schedules: add, list, show, pause, resume, run, remove")
    actions = sub.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    # `add` stores each flag under the API field it fills (REQUEST_FIELDS, SCHEDULE_FIELDS); absent: None.
    plan = subcommand(actions.add_parser, "add", "save an export request that runs on a cron", run=cmd_add)
    plan.add_argument("--type", dest="exportType", metavar="TYPE", required=True, help="the export type")
    plan.add_argument("--cron", required=True, help="five fields on the time zone's wall clock, e.g. '0 6 * * *'")
    plan.add_argument("--timezone", help="IANA time zone name (default UTC)")
    plan.add_argument("--format", help=FORMAT_CHOICES)
    plan.add_argument("--date-key", dest="dateKey", metavar="DATE_KEY", help="codeWaves: the wave's epoch millis")
    markets = "entries: rows for additional markets"
    plan.add_argument(
        "--include-all-markets", dest="includeAllMarkets", action="store_true", default=None, help=markets
    )
    incremental = "send only rows earlier runs have not sent"
    plan.add_argument("--incremental", action="store_true", default=None, help=incremental)
    plan.add_argument(
        "--skip-empty",
        dest="skipEmpty",
        action=argparse.BooleanOptionalAction,
        help="no file when no new rows (default: --incremental)",
    )
    plan.add_argument(
        "--destination", dest="destinations", action="append", metavar="ID", help="a destination id (repeatable)"
    )
    plan.add_argument("--paused", action="store_true", default=None, help="create it paused")
    json_flag(plan, "answer")
    json_flag(
        subcommand(actions.add_parser, "list", "the campaign's schedules and their next run", run=cmd_list), "list"
    )
    plan = subcommand(
        actions.add_parser, "show", "one schedule, its next runs and its runs", "schedule_id", run=cmd_show
    )
    plan.add_argument("--from", dest="from_", metavar="DATE_TIME", help="show the next runs after this instead of now")
    json_flag(plan, "schedule")
    for action, run, text in (
        ("pause", cmd_pause, "stop its ticks until resumed"),
        ("resume", cmd_resume, "tick again from now on (the paused time's ticks never run)"),
        ("run", cmd_run, "queue a run now, outside the cron"),
        ("remove", cmd_remove, "remove it (its exports stay)"),
    ):
        subcommand(actions.add_parser, action, text, "schedule_id", run=run)
