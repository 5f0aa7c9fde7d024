"""`export-service`: the command-line client of the REST API (SPEC §9), over HTTP only.

    export-service token --campaign 123                  # dev mode: prints a token
    export EXPORT_SERVICE_TOKEN=$(export-service token --campaign 123)
    export-service request 123 entries --wait --download entries.csv
    export-service status 123 EXPORT_ID | list 123 --type entries | wait 123 EXPORT_ID
    export-service download 123 EXPORT_ID [PATH]
    export-service rerun --dry-run                       # = python -m export_pipelines.rerun

The API is found at `--url` / EXPORT_SERVICE_URL (default http://127.0.0.1:8000) with the
token of `--token` / EXPORT_SERVICE_TOKEN. Exit status: 0 when the command did what it says
(for `wait`, `request --wait` and `download`: the export FINISHED); 1 when the export FAILED or
EXPIRED; 2 for a usage error; 3 when the API refused the request; 4 when it cannot be reached.
Failures print one line on stderr, never a traceback. Imports neither dagster nor the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ENDED = ("FINISHED", "FAILED", "EXPIRED")
EXIT_OK, EXIT_EXPORT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


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
        except httpx.ConnectError:
            raise CliError(f"cannot reach the export-service API at {self.url} (connection refused)", 4) from None
        except httpx.TimeoutException:
            raise CliError(f"the export-service API at {self.url} did not answer in time", 4) from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.url} failed ({type(exc).__name__})", EXIT_UNREACHABLE) from None
        self.last_status = response.status_code
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
    from urllib.parse import quote

    return quote(value, safe="")


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


def _progress_text(record: dict[str, Any]) -> str:
    progress = record.get("progress") or {}
    rows, total, stage = progress.get("rows"), progress.get("total"), progress.get("stage")
    text = str(record.get("status"))
    if stage:
        text += f" {stage}"
    if rows is not None:
        text += f" {rows}/{total} rows" if total is not None else f" {rows} rows"
    return text


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        task = bar.add_task("PENDING", total=None)

        def rich_update(record: dict[str, Any]) -> None:
            progress = record.get("progress") or {}
            stage = progress.get("stage")
            description = f"{record.get('status')} {stage}" if stage else str(record.get("status"))
            bar.update(task, description=description, completed=progress.get("rows") or 0, total=progress.get("total"))

        yield rich_update


# -- downloading ------------------------------------------------------------------------------


def _safe_relative(key: str) -> Path:
    """A key as a relative path that cannot leave the target directory."""
    parts = [p for p in PurePosixPath(key).parts if p not in ("", "/", ".", "..")]
    if not parts:
        raise CliError(f"cannot store key {key!r} as a file", EXIT_REFUSED)
    return Path(*parts)


def download(api: Api, record: dict[str, Any], target: str | None) -> list[Path]:
    """Every file of a FINISHED export: one file to `target` (or its key's name), several under a directory."""
    if record.get("status") != "FINISHED":
        if record.get("status") in ("FAILED", "EXPIRED"):
            raise _failure(record)
        raise CliError(f"export {record.get('id')} is {record.get('status')}, not FINISHED yet", EXIT_REFUSED)
    if record.get("path"):
        key = str(record.get("key") or f"{record.get('id')}.csv")
        name = _safe_relative(key).name
        path = Path(target) if target else Path(name)
        if path.is_dir():
            path = path / name
        files = [(str(record["path"]), path)]
    elif record.get("paths"):
        root = Path(target or ".")
        files = [(str(p["url"]), root / _safe_relative(str(p["key"]))) for p in record["paths"]]
    else:
        raise CliError(f"export {record.get('id')} has no file to download (deleted?)", EXIT_REFUSED)
    for url, path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
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
    body: dict[str, Any] = {"exportType": args.export_type}
    if args.date_key is not None:
        body["dateKey"] = args.date_key
    if args.all_markets:
        body["includeAllMarkets"] = True
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
    download(api, api.get_export(args.campaign_id, args.export_id), args.path)
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
    sub.add_argument("path", nargs="?", help="file (single-file types) or directory (several files)")
    sub.set_defaults(run=cmd_download)

    sub = commands.add_parser("token", help="dev mode: mint a token through POST /dev/token")
    sub.add_argument("--user-id", default="admin-1")
    sub.add_argument("--campaign", default="123", help="campaign the permissions apply to (default 123)")
    sub.add_argument("--permission", action="append", help="repeatable (default REPORT)")
    sub.add_argument("--supreme", action="store_true", help="supreme token (CCPA, every campaign)")
    sub.add_argument("--expires-in", type=int, default=3600, help="seconds (default 3600)")
    sub.set_defaults(run=cmd_token)

    # Listed for --help; main() hands everything after `rerun` to export_pipelines.rerun unparsed.
    commands.add_parser(
        "rerun", help="re-run FAILED/EXPIRED exports via Dagster backfills; `rerun --help` for its options"
    )
    return root


def _rerun_args(argv: list[str]) -> list[str] | None:
    """The arguments after `rerun` when that is the command (root options may come before it)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--url", "--token"):
            i += 2
        elif arg.startswith(("--url=", "--token=")):
            i += 1
        else:
            return argv[i + 1 :] if arg == "rerun" else None
    return None


def _exit(message: str, code: int) -> NoReturn:
    print(f"export-service: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rerun_args = _rerun_args(argv)
    if rerun_args is not None:
        # Talks to MongoDB and the Dagster webserver (MONGODB_URI, DAGSTER_GRAPHQL_URL), not the API.
        from export_pipelines import rerun

        try:
            return rerun.main(rerun_args)
        except Exception as exc:  # noqa: BLE001 - an operator tool: one line, not a traceback
            _exit(f"rerun failed: {' '.join(str(exc).split())[:300] or type(exc).__name__}", EXIT_UNREACHABLE)
    args = parser().parse_args(argv)
    api = Api(args.url, args.token)
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
