"""`request`, `status`, `list`, `wait`, `download` and `rerun`: one campaign's exports."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from export_cli.api import EXIT_OK, Api, CliError, campaign_path, fields_of
from export_cli.commands import json_flag, subcommand
from export_cli.download import check_target, download
from export_cli.output import failure, progress_display, progress_text, say, say_json, summary, table
from export_core.export_types import REQUEST_FIELDS
from export_core.formats import DEFAULT_FORMAT, FORMATS
from export_core.vocabulary import ENDED, EXPIRED, FAILED, FINISHED, TRIGGERED

OTHER_FORMATS = [name for name in FORMATS if name != DEFAULT_FORMAT]
# What POST .../exports takes besides the export's REQUEST_FIELDS; only the API (export_api/models/exports.py) has them.
EXPORT_OPTIONS = ("since", "destinations")
# "csv (default), csv.gz, parquet or xlsx"
FORMAT_CHOICES = f"{DEFAULT_FORMAT} (default), {', '.join(OTHER_FORMATS[:-1])} or {OTHER_FORMATS[-1]}"


def wait_for(api: Api, campaign_id: str, export_id: str, *, interval: float, timeout: float | None) -> dict[str, Any]:
    """Poll until the export ends; a progress bar on a terminal, one line per change otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with progress_display() as show:
        while True:
            record = api.get_export(campaign_id, export_id)
            show(record)
            if record.get("status") in ENDED:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(f"export {export_id} is still {record.get('status')} after {timeout:g} s", 1)
            time.sleep(interval)


def _finish(api: Api, campaign_id: str, export_id: str, args: argparse.Namespace, target: str | None) -> int:
    record = wait_for(api, campaign_id, export_id, interval=args.interval, timeout=args.timeout)
    if record.get("status") != FINISHED:
        raise failure(record)
    say(summary(record))
    if target is not None:
        download(record, target)
    return EXIT_OK


def cmd_request(api: Api, args: argparse.Namespace) -> int:
    check_target(args.download)  # before queueing and waiting, not after
    # The API checks the values: the formats a type is offered in, what it reads as a date-time.
    body = fields_of(vars(args), [*sorted(REQUEST_FIELDS), *EXPORT_OPTIONS])
    record = api.request("POST", campaign_path(args.campaign_id, "exports"), json=body)
    say(f"{'queued' if api.last_status == 201 else 'existing'} {summary(record)}")
    if not (args.wait or args.download):
        return EXIT_OK
    return _finish(api, args.campaign_id, str(record["id"]), args, args.download)


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    record = api.get_export(args.campaign_id, args.export_id)
    if args.json:
        say_json(record)
    else:
        say(summary(record))
        if record.get("status") == TRIGGERED:
            say(progress_text(record))
    if record.get("status") in (FAILED, EXPIRED):
        raise failure(record)
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "page": args.page}
    if args.type:
        params["exportType"] = args.type
    page = api.request("GET", campaign_path(args.campaign_id, "exports"), params=params)
    if args.json:
        say_json(page)
        return EXIT_OK
    rows = [
        [
            str(record.get("id")),
            str(record.get("exportType")),
            str(record.get("status")),
            str((record.get("date") or {}).get("created", "")),
            "" if record.get("count") is None else str(record["count"]),
        ]
        for record in page["exports"]
    ]
    footer = f"{len(page['exports'])} of {page['total']} export(s), page {page['page']}"
    table(["id", "type", "status", "created", "rows"], rows, footer)
    return EXIT_OK


def cmd_wait(api: Api, args: argparse.Namespace) -> int:
    return _finish(api, args.campaign_id, args.export_id, args, None)


def cmd_download(api: Api, args: argparse.Namespace) -> int:
    check_target(args.path)
    download(api.get_export(args.campaign_id, args.export_id), args.path)
    return EXIT_OK


def cmd_rerun(api: Api, args: argparse.Namespace) -> int:
    record = api.request("POST", campaign_path(args.campaign_id, "exports", args.export_id, "rerun"))
    say(f"rerun {summary(record)}")
    if not args.wait:
        return EXIT_OK
    return _finish(api, args.campaign_id, str(record["id"]), args, None)


def _waiting(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    sub.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")


def add_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """request, status, list, wait and download."""
    # `request` stores each flag under the API field it fills (REQUEST_FIELDS, EXPORT_OPTIONS); absent: None.
    sub = add_parser("request", help="queue an export (returns the identical active one if any)")
    sub.add_argument("campaign_id")
    sub.add_argument("exportType", metavar="export_type")
    sub.add_argument("--date-key", dest="dateKey", metavar="DATE_KEY", help="codeWaves: the wave's epoch millis")
    markets = "entries: also rows for additional markets"
    sub.add_argument("--all-markets", dest="includeAllMarkets", action="store_true", default=None, help=markets)
    formats = f"file format: {FORMAT_CHOICES} (ZIP and multi-file types: {DEFAULT_FORMAT} only)"
    sub.add_argument("--format", metavar="F", help=formats)
    sub.add_argument("--since", metavar="DATE_TIME", help="only rows created after this ISO 8601 date-time (UTC)")
    there = "push its file(s) there (repeatable)"
    sub.add_argument("--destination", dest="destinations", action="append", metavar="ID", help=there)
    sub.add_argument("--wait", action="store_true", help="wait until it ends")
    sub.add_argument("--download", metavar="PATH", help="wait, then download its file(s) to PATH")
    _waiting(sub)
    sub.set_defaults(run=cmd_request)

    sub = subcommand(add_parser, "status", "one export's status", "export_id", run=cmd_status)
    json_flag(sub, "record")

    sub = subcommand(add_parser, "list", "a campaign's exports, newest first", run=cmd_list)
    sub.add_argument("--type", help="only this export type")
    sub.add_argument("--limit", type=int, default=20)
    sub.add_argument("--page", type=int, default=0)
    json_flag(sub, "page")
    sub.set_defaults(run=cmd_list)

    sub = subcommand(add_parser, "wait", "show progress until the export ends", "export_id", run=cmd_wait)
    _waiting(sub)

    sub = subcommand(add_parser, "download", "download every file of a FINISHED export", "export_id", run=cmd_download)
    sub.add_argument(
        "path", nargs="?", help="a folder, or a file in a folder that exists (several files: a folder, made if missing)"
    )


def add_rerun(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    sub = subcommand(
        add_parser, "rerun", "re-run a FAILED or EXPIRED export (through the API)", "export_id", run=cmd_rerun
    )
    sub.add_argument("--wait", action="store_true", help="wait until it ends, showing progress")
    _waiting(sub)
