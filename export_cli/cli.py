"""`export-service`: the command-line client of the REST API (SPEC §9), over HTTP only.

    export-service token --campaign 123                  # dev mode: prints a token
    export EXPORT_SERVICE_TOKEN=$(export-service token --campaign 123)
    export-service request 123 entries --wait --download entries.csv
    export-service request 123 entries --format xlsx --download .  # csv (default), csv.gz, parquet, xlsx
    export-service status 123 EXPORT_ID | list 123 --type entries | wait 123 EXPORT_ID
    export-service download 123 EXPORT_ID [PATH]
    export-service rerun 123 EXPORT_ID [--wait]          # POST .../rerun: a FAILED/EXPIRED export again
    export-service webhooks add 123 https://hooks.example.com/x --events export.finished,export.failed
    export-service webhooks list 123 | remove 123 WEBHOOK_ID | deliveries 123 WEBHOOK_ID
    export-service request 123 entries --since 2027-03-01T00:00:00Z   # only rows created after it
    export-service schedules add 123 --type entries --cron '0 6 * * *' --timezone America/New_York --incremental
    export-service schedules list 123 | show 123 SCHEDULE_ID [--from 2027-03-13T12:00:00Z]
    export-service schedules pause|resume|run|remove 123 SCHEDULE_ID
    export-service destinations add 123 --type sftp --host sftp.partner.example --username vf --path /incoming \
        --host-key-file partner.pub --generate-key          # or --password-stdin; prints the key to authorize
    export-service destinations add 123 --type s3 --bucket partner-drop --prefix vf --region eu-west-1
    export-service destinations list 123 | test 123 DESTINATION_ID | remove 123 DESTINATION_ID
    export-service request 123 codes --destination DESTINATION_ID     # pushed there once FINISHED
    export-service destinations deliveries 123 EXPORT_ID                # what was sent where

The API is found at `--url` / EXPORT_SERVICE_URL (default http://127.0.0.1:8000) with the
token of `--token` / EXPORT_SERVICE_TOKEN. Exit status: 0 when the command did what it says
(for `wait`, `request --wait`, `rerun --wait` and `download`: the export FINISHED); 1 when the
export FAILED or EXPIRED; 2 for a usage error; 3 when the API refused the request; 4 when it
cannot be reached; 141 when the reader of its output went away (`| head`), quietly.
Failures print one line on stderr, never a traceback. Imports neither dagster nor the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ENDED = ("FINISHED", "FAILED", "EXPIRED")
EXIT_OK, EXIT_EXPORT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader left (`| head`)
# What `progress.rows` / `progress.total` count in each stage; anything else counts rows.
STAGE_UNITS = {"extract": "rows", "transform": "rows", "upload": "files", "finished": "rows"}


class CliError(Exception):
    """An expected failure: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """The few calls the commands make; every failure becomes a CliError with a one-line message."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.last_status = 0  # HTTP status of the last answer (POST: 201 new, 200 existing duplicate)

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = {"X-Request-ID": f"cli-{uuid.uuid4().hex}"}
        if auth:
            if not self.token:
                raise CliError("no token: set EXPORT_SERVICE_TOKEN or pass --token", EXIT_USAGE)
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.client.request(method, path, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the export-service API at {self.url} ({_why(exc, self.url)})", 4) from None
        except httpx.TimeoutException:
            raise CliError(f"the export-service API at {self.url} did not answer in time", 4) from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.url} failed ({type(exc).__name__})", EXIT_UNREACHABLE) from None
        self.last_status = response.status_code
        if response.status_code == 204:  # e.g. DELETE of a webhook: nothing to read
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CliError(f"the API answered {response.status_code} with a body that is not JSON", 3) from None
        raise CliError(_refusal(response), EXIT_REFUSED)

    def get_export(self, campaign_id: str, export_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/campaigns/{_seg(campaign_id)}/exports/{_seg(export_id)}"))


def _seg(value: str) -> str:
    """A path segment, percent-encoded (ids are user data)."""
    return quote(value, safe="")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in the chain of causes httpx wraps its transport errors in."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        if isinstance(seen, kind):
            return True
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def _why(exc: httpx.ConnectError, url: str) -> str:
    """Why a connection failed, in words: the name did not resolve, nobody listens, or other."""
    if _caused_by(exc, socket.gaierror):
        return f"the host name {urlsplit(url).hostname} could not be resolved"
    if _caused_by(exc, ConnectionRefusedError):
        return "connection refused"
    return "could not connect"


def checked_url(url: str) -> str:
    """The API's base URL if it is an http(s) URL with a host; CliError (usage) saying what to write."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise CliError(f"the API URL {url!r} names no host; write e.g. {DEFAULT_URL}", EXIT_USAGE)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise CliError(f"the API URL {url!r} has an invalid port; write e.g. {DEFAULT_URL}", EXIT_USAGE) from None
        return url
    if "://" in url:
        raise CliError(f"the API URL {url!r} must start with http:// or https://", EXIT_USAGE)
    raise CliError(f"the API URL {url!r} has no scheme; write http://{url} (or https://)", EXIT_USAGE)


def _refusal(response: httpx.Response) -> str:
    """The API's error message (SPEC §6 body), or the bare status when the body is something else."""
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase or "error"
    request_id = response.headers.get("x-request-id")
    suffix = f" (HTTP {response.status_code}, request id {request_id})" if request_id else f" ({response.status_code})"
    return " ".join(message.split()) + suffix


# -- output -----------------------------------------------------------------------------------


def _print(text: str) -> None:
    print(text, flush=True)


def _summary(record: dict[str, Any]) -> str:
    parts = [str(record.get("id")), str(record.get("status")), str(record.get("exportType"))]
    if record.get("count") is not None:
        parts.append(f"{record['count']} rows")
    key = record.get("key")
    if key:
        parts.append(", ".join(key) if isinstance(key, list) else str(key))
    return "  ".join(parts)


def _failure(record: dict[str, Any]) -> CliError:
    error = record.get("error") or {}
    message = " ".join(str(error.get("message") or f"the export is {record.get('status')}").split())
    return CliError(f"export {record.get('id')} {record.get('status')}: {message}", EXIT_EXPORT_FAILED)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _progress(record: dict[str, Any]) -> tuple[str, int | None, int | None, str]:
    """(description, done, total, count text) of the record's `progress`; done never past total.

    `total` is what the current stage counts towards, or null when unknown (indeterminate);
    the count names the stage's unit: rows, or files while uploading.
    """
    progress = record.get("progress")
    progress = progress if isinstance(progress, dict) else {}
    stage = progress.get("stage")
    description = f"{record.get('status')} {stage}" if stage else str(record.get("status"))
    done, total = _count(progress.get("rows")), _count(progress.get("total"))
    if done is None:
        return description, None, None, ""
    unit = STAGE_UNITS.get(str(stage), "rows")
    if total is None:
        return description, done, None, f"{done} {unit}"
    done = min(done, total)
    return description, done, total, f"{done}/{total} {unit}"


def _progress_text(record: dict[str, Any]) -> str:
    description, _, _, count = _progress(record)
    return f"{description} {count}" if count else description


# -- waiting ----------------------------------------------------------------------------------


def wait_for(api: Api, campaign_id: str, export_id: str, *, interval: float, timeout: float | None) -> dict[str, Any]:
    """Poll until the export ends; a progress bar on a terminal, one line per change otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _progress_display() as show:
        while True:
            record = api.get_export(campaign_id, export_id)
            show(record)
            if record.get("status") in ENDED:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(f"export {export_id} is still {record.get('status')} after {timeout:g} s", 1)
            time.sleep(interval)


@contextmanager
def _progress_display() -> Iterator[Callable[[dict[str, Any]], None]]:
    if not sys.stdout.isatty():
        last: list[str] = []

        def plain(record: dict[str, Any]) -> None:
            text = _progress_text(record)
            if not last or last[-1] != text:
                last.append(text)
                _print(text)

        yield plain
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # The bar fills to done/total (never past it); without a total it pulses (indeterminate).
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("PENDING", total=None, count="")

        def rich_update(record: dict[str, Any]) -> None:
            description, done, total, count = _progress(record)
            bar.update(task, description=description, completed=done or 0, total=total, count=count)

        yield rich_update


# -- downloading ------------------------------------------------------------------------------


def _safe_relative(key: str) -> Path:
    """A key as a relative path that cannot leave the target directory."""
    parts = [p for p in PurePosixPath(key).parts if p not in ("", "/", ".", "..")]
    if not parts:
        raise CliError(f"cannot store key {key!r} as a file", EXIT_REFUSED)
    return Path(*parts)


def _missing_folder(folder: Path) -> CliError:
    return CliError(f"the folder {folder} does not exist; create it first or choose another path", EXIT_USAGE)


def check_target(target: str | None) -> None:
    """Before waiting for an export: PATH is a folder, or the folder it would be written in exists."""
    if target is None:
        return
    path = Path(target)
    if not path.is_dir() and not path.parent.is_dir():
        raise _missing_folder(path.parent)


def _file_target(target: str | None, name: str) -> Path:
    """Where a single-file export goes: `target` (a file, or a folder to put `name` in), or `name` here."""
    if target is None:
        return Path(name)
    path = Path(target)
    if path.is_dir():
        return path / name
    if target.endswith(("/", os.sep)):  # meant as a folder
        raise _missing_folder(path)
    if not path.parent.is_dir():
        raise _missing_folder(path.parent)
    return path


def _folder_target(target: str | None) -> Path:
    """The folder a multi-file export goes under: created when missing, if the folder it is in exists."""
    root = Path(target or ".")
    if root.is_dir():
        return root
    if root.exists():
        raise CliError(f"{root} is a file; a multi-file export is saved under a folder", EXIT_USAGE)
    if not root.parent.is_dir():
        raise _missing_folder(root.parent)
    root.mkdir()
    return root


def download(api: Api, record: dict[str, Any], target: str | None) -> list[Path]:
    """Every file of a FINISHED export: one file to `target` (or its key's name), several under a folder.

    Nothing is created above `target`: a single file needs its folder to exist; a multi-file
    export creates its folder `target` when the folder that holds it exists, and the keys'
    subfolders under it.
    """
    if record.get("status") != "FINISHED":
        if record.get("status") in ("FAILED", "EXPIRED"):
            raise _failure(record)
        raise CliError(f"export {record.get('id')} is {record.get('status')}, not FINISHED yet", EXIT_REFUSED)
    if record.get("path"):
        key = str(record.get("key") or f"{record.get('id')}.csv")
        files = [(str(record["path"]), _file_target(target, _safe_relative(key).name))]
    elif record.get("paths"):
        root = _folder_target(target)
        files = [(str(p["url"]), root / _safe_relative(str(p["key"]))) for p in record["paths"]]
    else:
        raise CliError(f"export {record.get('id')} has no file to download (deleted?)", EXIT_REFUSED)
    for url, path in files:
        path.parent.mkdir(parents=True, exist_ok=True)  # a key's subfolders, under the target only
        partial = path.with_name(path.name + ".part")
        try:
            with httpx.stream("GET", url, timeout=60.0) as response:
                if not response.is_success:
                    raise CliError(f"download of {path.name} failed (HTTP {response.status_code})", EXIT_REFUSED)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(f"download of {path.name} failed ({type(exc).__name__})", EXIT_UNREACHABLE) from None
        partial.replace(path)  # never a half-written file under the final name
        _print(f"saved {path}")
    return [path for _, path in files]


# -- commands ---------------------------------------------------------------------------------


def cmd_request(api: Api, args: argparse.Namespace) -> int:
    check_target(args.download)  # before queueing and waiting, not after
    body: dict[str, Any] = {"exportType": args.export_type}
    if args.date_key is not None:
        body["dateKey"] = args.date_key
    if args.all_markets:
        body["includeAllMarkets"] = True
    if args.format is not None:
        body["format"] = args.format  # the API says which formats the type is offered in
    if args.since is not None:
        body["since"] = args.since  # the API says what it reads as a date-time
    if args.destination:
        body["destinations"] = args.destination
    record = api.request("POST", f"/campaigns/{_seg(args.campaign_id)}/exports", json=body)
    _print(f"{'queued' if api.last_status == 201 else 'existing'} {_summary(record)}")
    if not (args.wait or args.download):
        return EXIT_OK
    return _finish(api, args.campaign_id, str(record["id"]), args, args.download)


def _finish(api: Api, campaign_id: str, export_id: str, args: argparse.Namespace, target: str | None) -> int:
    record = wait_for(api, campaign_id, export_id, interval=args.interval, timeout=args.timeout)
    if record.get("status") != "FINISHED":
        raise _failure(record)
    _print(_summary(record))
    if target is not None:
        download(api, record, target)
    return EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    record = api.get_export(args.campaign_id, args.export_id)
    if args.json:
        _print(json.dumps(record, indent=2))
    else:
        _print(_summary(record))
        if record.get("status") == "TRIGGERED":
            _print(_progress_text(record))
    if record.get("status") in ("FAILED", "EXPIRED"):
        raise _failure(record)
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "page": args.page}
    if args.type:
        params["exportType"] = args.type
    page = api.request("GET", f"/campaigns/{_seg(args.campaign_id)}/exports", params=params)
    if args.json:
        _print(json.dumps(page, indent=2))
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
    header = ["id", "type", "status", "created", "rows"]
    footer = f"{len(page['exports'])} of {page['total']} export(s), page {page['page']}"
    if not sys.stdout.isatty():  # scripts: tab-separated, nothing truncated
        for row in [header, *rows]:
            _print("\t".join(row))
        _print(footer)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None)
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(footer)
    return EXIT_OK


def cmd_wait(api: Api, args: argparse.Namespace) -> int:
    return _finish(api, args.campaign_id, args.export_id, args, None)


def cmd_download(api: Api, args: argparse.Namespace) -> int:
    check_target(args.path)
    download(api, api.get_export(args.campaign_id, args.export_id), args.path)
    return EXIT_OK


def cmd_rerun(api: Api, args: argparse.Namespace) -> int:
    path = f"/campaigns/{_seg(args.campaign_id)}/exports/{_seg(args.export_id)}/rerun"
    record = api.request("POST", path)
    _print(f"rerun {_summary(record)}")
    if not args.wait:
        return EXIT_OK
    return _finish(api, args.campaign_id, str(record["id"]), args, None)


WEBHOOK_EVENTS = (
    "export.finished", "export.failed", "export.expired", "export.delivered", "export.delivery_failed",
    "schedule.paused",
)  # fmt: skip


def _table(header: list[str], rows: list[list[str]], footer: str) -> None:
    """Rows as a table on a terminal; tab-separated, nothing truncated, for scripts."""
    if not sys.stdout.isatty():
        for row in [header, *rows]:
            _print("\t".join(row))
        _print(footer)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None)
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(footer)


def _events(text: str) -> list[str]:
    events = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if not events or unknown:
        raise CliError(f"--events takes a comma-separated list of: {', '.join(WEBHOOK_EVENTS)}", EXIT_USAGE)
    return events


def cmd_webhooks_add(api: Api, args: argparse.Namespace) -> int:
    body = {"url": args.webhook_url, "events": _events(args.events)}
    created = api.request("POST", f"/campaigns/{_seg(args.campaign_id)}/webhooks", json=body)
    if args.json:
        _print(json.dumps(created, indent=2))
        return EXIT_OK
    _print(f"webhook {created['id']}  {','.join(created['events'])}  {created['url']}")
    _print(f"secret {created['secret']}")
    with contextlib.suppress(OSError):
        print(
            "export-service: keep the secret now; it is never shown again (it verifies the signatures)", file=sys.stderr
        )
    return EXIT_OK


def cmd_webhooks_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", f"/campaigns/{_seg(args.campaign_id)}/webhooks")
    if args.json:
        _print(json.dumps(found, indent=2))
        return EXIT_OK
    rows = [
        [str(h["id"]), ",".join(h["events"]), str(h["url"]), str(h.get("createdAt", ""))] for h in found["webhooks"]
    ]
    _table(["id", "events", "url", "created"], rows, f"{len(rows)} webhook(s)")
    return EXIT_OK


def cmd_webhooks_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/campaigns/{_seg(args.campaign_id)}/webhooks/{_seg(args.webhook_id)}")
    _print(f"removed webhook {args.webhook_id}")
    return EXIT_OK


def cmd_webhooks_deliveries(api: Api, args: argparse.Namespace) -> int:
    path = f"/campaigns/{_seg(args.campaign_id)}/webhooks/{_seg(args.webhook_id)}/deliveries"
    page = api.request("GET", path, params={"limit": args.limit, "page": args.page})
    if args.json:
        _print(json.dumps(page, indent=2))
        return EXIT_OK
    rows = []
    for delivery in page["deliveries"]:
        last = (delivery.get("attempts") or [{}])[0]
        result = last.get("httpStatus") or last.get("error") or ""
        rows.append(
            [str(delivery["id"]), str(delivery["event"]), str(delivery["exportId"]), str(delivery["status"]),
             str(len(delivery.get("attempts") or [])), str(result), str(delivery.get("nextAttemptAt") or "")]
        )  # fmt: skip
    _table(["id", "event", "export", "status", "attempts", "last", "next attempt"], rows, f"{len(rows)} delivery(ies)")
    return EXIT_OK


def _campaign_path(campaign_id: str, collection: str, item_id: str | None = None, action: str = "") -> str:
    """`/campaigns/{c}/{collection}[/{item}][/{action}]`, ids percent-encoded."""
    path = f"/campaigns/{_seg(campaign_id)}/{collection}"
    if item_id is not None:
        path += f"/{_seg(item_id)}"
    return path + (f"/{action}" if action else "")


def _schedules_path(campaign_id: str, schedule_id: str | None = None, action: str = "") -> str:
    return _campaign_path(campaign_id, "schedules", schedule_id, action)


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


def cmd_schedules_add(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"exportType": args.type, "cron": args.cron}
    optional = {
        "format": args.format,
        "dateKey": args.date_key,
        "timezone": args.timezone,
        "skipEmpty": args.skip_empty,
        "destinations": args.destination,
    }
    body.update({field: value for field, value in optional.items() if value is not None})
    for field, flag in (("includeAllMarkets", args.include_all_markets), ("incremental", args.incremental)):
        if flag:
            body[field] = True
    if args.paused:
        body["paused"] = True
    created = api.request("POST", _schedules_path(args.campaign_id), json=body)
    if args.json:
        _print(json.dumps(created, indent=2))
        return EXIT_OK
    _print(f"schedule {created['id']}  {_request_text(created)}  {created['cron']} {created['timezone']}")
    _print(f"next run {_next_run(created)}")
    return EXIT_OK


def cmd_schedules_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", _schedules_path(args.campaign_id))
    if args.json:
        _print(json.dumps(found, indent=2))
        return EXIT_OK
    rows = [
        [str(s["id"]), _request_text(s), str(s["cron"]), str(s["timezone"]), "paused" if s["paused"] else "active",
         _next_run(s)]
        for s in found["schedules"]
    ]  # fmt: skip
    _table(["id", "request", "cron", "timezone", "state", "next run"], rows, f"{len(rows)} schedule(s)")
    return EXIT_OK


def cmd_schedules_show(api: Api, args: argparse.Namespace) -> int:
    params = {"from": args.from_} if args.from_ else None
    schedule = api.request("GET", _schedules_path(args.campaign_id, args.schedule_id), params=params)
    if args.json:
        _print(json.dumps(schedule, indent=2))
        return EXIT_OK
    state = f"paused: {schedule.get('pausedReason') or 'paused'}" if schedule["paused"] else "active"
    _print(f"schedule {schedule['id']}")
    _print(f"  request       {_request_text(schedule)}")
    _print(f"  cron          {schedule['cron']} ({schedule['timezone']})")
    _print(f"  state         {state}")
    _print(f"  destinations  {', '.join(schedule.get('destinations') or []) or 'none'}")
    _print(f"  created       {schedule.get('createdAt')} by {schedule.get('createdBy')}")
    _print("next runs" + (f" after {args.from_}" if args.from_ else ""))
    for run in schedule["nextRuns"] or [{"local": "none (paused)", "at": ""}]:
        _print(f"  {run['local']}  {run['at']}".rstrip())
    _print("runs, newest first")
    rows = [
        [str(run["scheduledFor"]), str(run["outcome"]) + (" (manual)" if run.get("manual") else ""),
         str(run["exportId"] or ""), "" if run["count"] is None else str(run["count"])]
        for run in schedule["runs"]
    ]  # fmt: skip
    _table(["scheduled for", "outcome", "export", "rows"], rows, f"{len(rows)} run(s)")
    return EXIT_OK


def _set_paused(api: Api, args: argparse.Namespace, paused: bool) -> dict[str, Any]:
    path = _schedules_path(args.campaign_id, args.schedule_id)
    return dict(api.request("PATCH", path, json={"paused": paused}))


def cmd_schedules_pause(api: Api, args: argparse.Namespace) -> int:
    _set_paused(api, args, True)
    _print(f"paused schedule {args.schedule_id}")
    return EXIT_OK


def cmd_schedules_resume(api: Api, args: argparse.Namespace) -> int:
    schedule = _set_paused(api, args, False)
    _print(f"resumed schedule {args.schedule_id}; next run {_next_run(schedule)}")
    return EXIT_OK


def cmd_schedules_run(api: Api, args: argparse.Namespace) -> int:
    record = api.request("POST", _schedules_path(args.campaign_id, args.schedule_id, "run"))
    _print(f"queued {_summary(record)}")
    return EXIT_OK


def cmd_schedules_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", _schedules_path(args.campaign_id, args.schedule_id))
    _print(f"removed schedule {args.schedule_id} (its exports stay)")
    return EXIT_OK


def _destinations_path(campaign_id: str, destination_id: str | None = None, action: str = "") -> str:
    return _campaign_path(campaign_id, "destinations", destination_id, action)


def _read_text_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise CliError(f"cannot read the {what} file {path} ({type(exc).__name__})", EXIT_USAGE) from None


def _password_from_stdin() -> str:
    """The password, never from the command line (it would show in `ps` and the shell's history): typed without
    echo on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("SFTP password: ")
    return sys.stdin.readline().rstrip("\r\n")


def _where(destination: dict[str, Any]) -> str:
    if destination.get("type") == "s3":
        return f"s3://{destination.get('bucket')}/{destination.get('prefix') or ''}"
    return f"{destination.get('username')}@{destination.get('host')}:{destination.get('port')}{destination.get('path')}"


def cmd_destinations_add(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"type": args.type}
    fields = {
        "name": args.name,
        "host": args.host,
        "port": args.port,
        "username": args.username,
        "path": args.path,
        "hostKey": _read_text_file(args.host_key_file, "host key") if args.host_key_file else args.host_key,
        "bucket": args.bucket,
        "prefix": args.prefix,
        "region": args.region,
        "roleArn": args.role_arn,
        "externalId": args.external_id,
        "acl": args.acl,
        "fileName": args.file_name,
        "pgpPublicKey": _read_text_file(args.pgp_key_file, "PGP key") if args.pgp_key_file else None,
    }
    body.update({field: value for field, value in fields.items() if value is not None})
    if args.generate_key:
        body["generateKey"] = True
    if args.password_stdin:
        body["password"] = _password_from_stdin()
    created = api.request("POST", _destinations_path(args.campaign_id), json=body)
    if args.json:
        _print(json.dumps(created, indent=2))
        return EXIT_OK
    _print(f"destination {created['id']}  {created['type']}  {_where(created)}  {created['name']}")
    if created.get("publicKey"):
        _print(f"public key {created['publicKey']}")
        with contextlib.suppress(OSError):
            print("export-service: the partner authorizes this key for the account (authorized_keys)", file=sys.stderr)
    return EXIT_OK


def cmd_destinations_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", _destinations_path(args.campaign_id))
    if args.json:
        _print(json.dumps(found, indent=2))
        return EXIT_OK
    rows = [
        [str(d["id"]), str(d["type"]), _where(d), str(d.get("auth") or ""), "pgp" if d.get("pgpFingerprint") else "",
         str(d["name"])]
        for d in found["destinations"]
    ]  # fmt: skip
    _table(["id", "type", "where", "login", "encrypted", "name"], rows, f"{len(rows)} destination(s)")
    return EXIT_OK


def cmd_destinations_test(api: Api, args: argparse.Namespace) -> int:
    answer = api.request("POST", _destinations_path(args.campaign_id, args.destination_id, "test"))
    message = " ".join(str(answer["message"]).split())
    if not answer["ok"]:
        raise CliError(f"destination {args.destination_id} failed its test: {message}", EXIT_EXPORT_FAILED)
    _print(f"ok  {message}")
    return EXIT_OK


def cmd_destinations_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", _destinations_path(args.campaign_id, args.destination_id))
    _print(f"removed destination {args.destination_id}")
    return EXIT_OK


def cmd_destinations_deliveries(api: Api, args: argparse.Namespace) -> int:
    path = f"/campaigns/{_seg(args.campaign_id)}/exports/{_seg(args.export_id)}/deliveries"
    found = api.request("GET", path)
    if args.json:
        _print(json.dumps(found, indent=2))
        return EXIT_OK
    rows = []
    for delivery in found["deliveries"]:
        attempts = delivery.get("attempts") or []
        last = " ".join(str(delivery.get("reason") or (attempts[0]["error"] if attempts else "") or "").split())
        rows.append(
            [str(delivery["destinationId"]), str(delivery["status"]), str(delivery.get("remotePath") or ""),
             "" if delivery.get("bytes") is None else str(delivery["bytes"]), str(len(attempts)), last]
        )  # fmt: skip
    _table(
        ["destination", "status", "remote path", "bytes", "attempts", "last error"], rows, f"{len(rows)} delivery(ies)"
    )
    return EXIT_OK


def cmd_token(api: Api, args: argparse.Namespace) -> int:
    body = {
        "userId": args.user_id,
        "campaignId": args.campaign,
        "permissions": args.permission or ["REPORT"],
        "supreme": args.supreme,
        "expiresIn": args.expires_in,
    }
    _print(str(api.request("POST", "/dev/token", auth=False, json=body)["token"]))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="export-service", description="Client of the export-service REST API.")
    root.add_argument("--url", default=os.environ.get("EXPORT_SERVICE_URL") or DEFAULT_URL, help="API base URL")
    root.add_argument("--token", default=os.environ.get("EXPORT_SERVICE_TOKEN"), help="bearer token (JWT)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def waiting(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
        sub.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    sub = commands.add_parser("request", help="queue an export (returns the identical active one if any)")
    sub.add_argument("campaign_id")
    sub.add_argument("export_type")
    sub.add_argument("--date-key", help="codeWaves: the wave's epoch millis")
    sub.add_argument("--all-markets", action="store_true", help="entries: also rows for additional markets")
    sub.add_argument(
        "--format",
        metavar="F",
        help="file format: csv (default), csv.gz, parquet or xlsx (ZIP and multi-file types: csv only)",
    )
    sub.add_argument("--since", metavar="DATE_TIME", help="only rows created after this ISO 8601 date-time (UTC)")
    sub.add_argument("--destination", action="append", metavar="ID", help="push its file(s) there (repeatable)")
    sub.add_argument("--wait", action="store_true", help="wait until it ends")
    sub.add_argument("--download", metavar="PATH", help="wait, then download its file(s) to PATH")
    waiting(sub)
    sub.set_defaults(run=cmd_request)

    sub = commands.add_parser("status", help="one export's status")
    sub.add_argument("campaign_id")
    sub.add_argument("export_id")
    sub.add_argument("--json", action="store_true", help="print the record as JSON")
    sub.set_defaults(run=cmd_status)

    sub = commands.add_parser("list", help="a campaign's exports, newest first")
    sub.add_argument("campaign_id")
    sub.add_argument("--type", help="only this export type")
    sub.add_argument("--limit", type=int, default=20)
    sub.add_argument("--page", type=int, default=0)
    sub.add_argument("--json", action="store_true", help="print the page as JSON")
    sub.set_defaults(run=cmd_list)

    sub = commands.add_parser("wait", help="show progress until the export ends")
    sub.add_argument("campaign_id")
    sub.add_argument("export_id")
    waiting(sub)
    sub.set_defaults(run=cmd_wait)

    sub = commands.add_parser("download", help="download every file of a FINISHED export")
    sub.add_argument("campaign_id")
    sub.add_argument("export_id")
    sub.add_argument(
        "path", nargs="?", help="a folder, or a file in a folder that exists (several files: a folder, made if missing)"
    )
    sub.set_defaults(run=cmd_download)

    sub = commands.add_parser("token", help="dev mode: mint a token through POST /dev/token")
    sub.add_argument("--user-id", default="admin-1")
    sub.add_argument("--campaign", default="123", help="campaign the permissions apply to (default 123)")
    sub.add_argument("--permission", action="append", help="repeatable (default REPORT)")
    sub.add_argument("--supreme", action="store_true", help="supreme token (CCPA, every campaign)")
    sub.add_argument("--expires-in", type=int, default=3600, help="seconds (default 3600)")
    sub.set_defaults(run=cmd_token)

    sub = commands.add_parser("rerun", help="re-run a FAILED or EXPIRED export (through the API)")
    sub.add_argument("campaign_id")
    sub.add_argument("export_id")
    sub.add_argument("--wait", action="store_true", help="wait until it ends, showing progress")
    waiting(sub)
    sub.set_defaults(run=cmd_rerun)

    sub = commands.add_parser("webhooks", help="a campaign's webhooks: add, list, remove, deliveries")
    actions = sub.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    hook = actions.add_parser("add", help="subscribe URL to export events; prints the signing secret, once")
    hook.add_argument("campaign_id")
    # Not `url`: that is the API's own address (--url).
    hook.add_argument("webhook_url", metavar="URL", help="https:// URL that receives the signed POSTs")
    hook.add_argument("--events", default=",".join(WEBHOOK_EVENTS), help="comma-separated (default: all of them)")
    hook.add_argument("--json", action="store_true", help="print the answer as JSON")
    hook.set_defaults(run=cmd_webhooks_add)
    hook = actions.add_parser("list", help="the campaign's webhooks (never their secrets)")
    hook.add_argument("campaign_id")
    hook.add_argument("--json", action="store_true", help="print the list as JSON")
    hook.set_defaults(run=cmd_webhooks_list)
    hook = actions.add_parser("remove", help="unsubscribe one webhook")
    hook.add_argument("campaign_id")
    hook.add_argument("webhook_id")
    hook.set_defaults(run=cmd_webhooks_remove)
    hook = actions.add_parser("deliveries", help="a webhook's deliveries and their last attempt, newest first")
    hook.add_argument("campaign_id")
    hook.add_argument("webhook_id")
    hook.add_argument("--limit", type=int, default=20)
    hook.add_argument("--page", type=int, default=0)
    hook.add_argument("--json", action="store_true", help="print the page as JSON")
    hook.set_defaults(run=cmd_webhooks_deliveries)

    sub = commands.add_parser("schedules", help="a campaign's schedules: add, list, show, pause, resume, run, remove")
    actions = sub.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    plan = actions.add_parser("add", help="save an export request that runs on a cron")
    plan.add_argument("campaign_id")
    plan.add_argument("--type", required=True, help="the export type")
    plan.add_argument("--cron", required=True, help="five fields on the time zone's wall clock, e.g. '0 6 * * *'")
    plan.add_argument("--timezone", help="IANA time zone name (default UTC)")
    plan.add_argument("--format", help="csv (default), csv.gz, parquet or xlsx")
    plan.add_argument("--date-key", help="codeWaves: the wave's epoch millis")
    plan.add_argument("--include-all-markets", action="store_true", help="entries: rows for additional markets")
    plan.add_argument("--incremental", action="store_true", help="send only rows earlier runs have not sent")
    plan.add_argument(
        "--skip-empty", action=argparse.BooleanOptionalAction, help="no file when no new rows (default: --incremental)"
    )
    plan.add_argument("--destination", action="append", metavar="ID", help="a destination id (repeatable)")
    plan.add_argument("--paused", action="store_true", help="create it paused")
    plan.add_argument("--json", action="store_true", help="print the answer as JSON")
    plan.set_defaults(run=cmd_schedules_add)
    plan = actions.add_parser("list", help="the campaign's schedules and their next run")
    plan.add_argument("campaign_id")
    plan.add_argument("--json", action="store_true", help="print the list as JSON")
    plan.set_defaults(run=cmd_schedules_list)
    plan = actions.add_parser("show", help="one schedule, its next runs and its runs")
    plan.add_argument("campaign_id")
    plan.add_argument("schedule_id")
    plan.add_argument("--from", dest="from_", metavar="DATE_TIME", help="show the next runs after this instead of now")
    plan.add_argument("--json", action="store_true", help="print the schedule as JSON")
    plan.set_defaults(run=cmd_schedules_show)
    for action, run, text in (
        ("pause", cmd_schedules_pause, "stop its ticks until resumed"),
        ("resume", cmd_schedules_resume, "tick again from now on (the paused time's ticks never run)"),
        ("run", cmd_schedules_run, "queue a run now, outside the cron"),
        ("remove", cmd_schedules_remove, "remove it (its exports stay)"),
    ):
        plan = actions.add_parser(action, help=text)
        plan.add_argument("campaign_id")
        plan.add_argument("schedule_id")
        plan.set_defaults(run=run)

    sub = commands.add_parser("destinations", help="a campaign's destinations: add, list, test, remove, deliveries")
    actions = sub.add_subparsers(dest="destinations_command", required=True, metavar="ACTION")
    place = actions.add_parser("add", help="add an SFTP, S3 or Marketing Cloud destination")
    place.add_argument("campaign_id")
    place.add_argument("--type", required=True, choices=("sftp", "s3", "sfmc"))
    place.add_argument("--name", help="shown in lists (default: where it is)")
    sftp_options = place.add_argument_group("sftp and sfmc")
    sftp_options.add_argument("--host")
    sftp_options.add_argument("--port", type=int, help="default 22")
    sftp_options.add_argument("--username")
    sftp_options.add_argument("--path", help="the folder files go to (it must exist)")
    pin = sftp_options.add_mutually_exclusive_group()
    pin.add_argument("--host-key", metavar="LINE", help="the server's host key: a known_hosts line or SHA256:…")
    pin.add_argument("--host-key-file", metavar="FILE", help="a file of known_hosts lines (what ssh-keyscan prints)")
    login = sftp_options.add_mutually_exclusive_group()
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin (typed: no echo)")
    login.add_argument(
        "--generate-key", action="store_true", help="the service makes a key pair; prints its public key"
    )
    s3_options = place.add_argument_group("s3")
    s3_options.add_argument("--bucket")
    s3_options.add_argument("--prefix", help="the folder in the bucket")
    s3_options.add_argument("--region")
    s3_options.add_argument("--role-arn", help="a role in the partner's account, assumed per delivery")
    s3_options.add_argument("--external-id", help="the role's external id")
    s3_options.add_argument("--acl", choices=("bucket-owner-full-control", "none"))
    place.add_argument("--pgp-key-file", metavar="FILE", help="ASCII-armoured OpenPGP public key to encrypt to")
    place.add_argument("--file-name", metavar="TEMPLATE", help="delivered name, e.g. '{name}_{exportId}.{ext}'")
    place.add_argument("--json", action="store_true", help="print the answer as JSON")
    place.set_defaults(run=cmd_destinations_add)
    place = actions.add_parser("list", help="the campaign's destinations (never their secrets)")
    place.add_argument("campaign_id")
    place.add_argument("--json", action="store_true", help="print the list as JSON")
    place.set_defaults(run=cmd_destinations_list)
    for action, run, text in (
        ("test", cmd_destinations_test, "connect, check the host key and write and remove a small file"),
        ("remove", cmd_destinations_remove, "remove it (schedules stop naming it)"),
    ):
        place = actions.add_parser(action, help=text)
        place.add_argument("campaign_id")
        place.add_argument("destination_id")
        place.set_defaults(run=run)
    place = actions.add_parser("deliveries", help="an export's deliveries to its destinations")
    place.add_argument("campaign_id")
    place.add_argument("export_id")
    place.add_argument("--json", action="store_true", help="print the list as JSON")
    place.set_defaults(run=cmd_destinations_deliveries)
    return root


def _exit(message: str, code: int) -> NoReturn:
    with contextlib.suppress(OSError):  # stderr closed too: the exit status still tells
        print(f"export-service: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the interpreter flushes it at exit, which would fail (and print) again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command; a closed stdout (`| head`) ends it quietly with EXIT_BROKEN_PIPE."""
    try:
        return _main(argv)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    try:
        url = checked_url(args.url)
    except CliError as exc:
        _exit(str(exc), exc.code)
    api = Api(url, args.token)
    try:
        return int(args.run(api, args))
    except CliError as exc:
        _exit(str(exc), exc.code)
    except KeyboardInterrupt:
        _exit("interrupted", 130)
    finally:
        api.client.close()


if __name__ == "__main__":
    sys.exit(main())
