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
Failures print one line on stderr, never a traceback. Imports neither dagster nor the server:
its choices and field names come from export_core, the same constants the service checks with.
One module per resource (exports, webhooks, schedules, destinations, auth); api.py speaks HTTP,
output.py prints, download.py saves files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import NoReturn

from export_cli import auth, destinations, exports, schedules, webhooks
from export_cli.api import (
    DEFAULT_URL,
    EXIT_BROKEN_PIPE,
    EXIT_EXPORT_FAILED,
    EXIT_REFUSED,
    EXIT_USAGE,
    Api,
    CliError,
    checked_url,
)

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_EXPORT_FAILED", "EXIT_REFUSED", "EXIT_USAGE", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The root options (where the API is, whose token), then each resource's commands in its module."""
    root = argparse.ArgumentParser(prog="export-service", description="Client of the export-service REST API.")
    root.add_argument("--url", default=os.environ.get("EXPORT_SERVICE_URL") or DEFAULT_URL, help="API base URL")
    root.add_argument("--token", default=os.environ.get("EXPORT_SERVICE_TOKEN"), help="bearer token (JWT)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (
        exports.add_commands,
        auth.add_commands,
        exports.add_rerun,
        webhooks.add_commands,
        schedules.add_commands,
        destinations.add_commands,
    ):
        add_commands(commands.add_parser)
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
