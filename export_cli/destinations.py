"""`destinations add|list|test|remove|deliveries`: where a campaign's finished files are pushed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export_cli.api import EXIT_EXPORT_FAILED, EXIT_OK, EXIT_USAGE, Api, CliError, campaign_path, fields_of
from export_cli.commands import json_flag, subcommand
from export_cli.output import note, say, say_json, table
from export_core.vocabulary import (
    COMMON_FIELDS,
    DEFAULT_FILE_NAME,
    DEFAULT_PORT,
    DESTINATION_FIELDS,
    DESTINATION_TYPES,
    S3,
    S3_ACLS,
)

# Every field the API takes, in the order of its lists; `add` stores each flag under the field it fills.
ALL_FIELDS = list(dict.fromkeys([*COMMON_FIELDS, *(f for fields in DESTINATION_FIELDS.values() for f in fields)]))


def _path(campaign_id: str, destination_id: str | None = None, action: str = "") -> str:
    return campaign_path(campaign_id, "destinations", destination_id, action)


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
    if destination.get("type") == S3:
        return f"s3://{destination.get('bucket')}/{destination.get('prefix') or ''}"
    return f"{destination.get('username')}@{destination.get('host')}:{destination.get('port')}{destination.get('path')}"


def cmd_add(api: Api, args: argparse.Namespace) -> int:
    values = dict(vars(args))
    if args.host_key_file:
        values["hostKey"] = _read_text_file(args.host_key_file, "host key")
    if args.pgp_key_file:
        values["pgpPublicKey"] = _read_text_file(args.pgp_key_file, "PGP key")
    if args.password_stdin:
        values["password"] = _password_from_stdin()
    created = api.request("POST", _path(args.campaign_id), json=fields_of(values, ALL_FIELDS))
    if args.json:
        say_json(created)
        return EXIT_OK
    say(f"destination {created['id']}  {created['type']}  {_where(created)}  {created['name']}")
    if created.get("publicKey"):
        say(f"public key {created['publicKey']}")
        note("the partner authorizes this key for the account (authorized_keys)")
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", _path(args.campaign_id))
    if args.json:
        say_json(found)
        return EXIT_OK
    rows = [
        [str(d["id"]), str(d["type"]), _where(d), str(d.get("auth") or ""), "pgp" if d.get("pgpFingerprint") else "",
         str(d["name"])]
        for d in found["destinations"]
    ]  # fmt: skip
    table(["id", "type", "where", "login", "encrypted", "name"], rows, f"{len(rows)} destination(s)")
    return EXIT_OK


def cmd_test(api: Api, args: argparse.Namespace) -> int:
    answer = api.request("POST", _path(args.campaign_id, args.destination_id, "test"))
    message = " ".join(str(answer["message"]).split())
    if not answer["ok"]:
        raise CliError(f"destination {args.destination_id} failed its test: {message}", EXIT_EXPORT_FAILED)
    say(f"ok  {message}")
    return EXIT_OK


def cmd_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", _path(args.campaign_id, args.destination_id))
    say(f"removed destination {args.destination_id}")
    return EXIT_OK


def cmd_deliveries(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", campaign_path(args.campaign_id, "exports", args.export_id, "deliveries"))
    if args.json:
        say_json(found)
        return EXIT_OK
    rows = []
    for delivery in found["deliveries"]:
        attempts = delivery.get("attempts") or []
        last = " ".join(str(delivery.get("reason") or (attempts[0]["error"] if attempts else "") or "").split())
        rows.append(
            [str(delivery["destinationId"]), str(delivery["status"]), str(delivery.get("remotePath") or ""),
             "" if delivery.get("bytes") is None else str(delivery["bytes"]), str(len(attempts)), last]
        )  # fmt: skip
    header = ["destination", "status", "remote path", "bytes", "attempts", "last error"]
    table(header, rows, f"{len(rows)} delivery(ies)")
    return EXIT_OK


def _add_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    place = subcommand(add_parser, "add", "add an SFTP, S3 or Marketing Cloud destination", run=cmd_add)
    place.add_argument("--type", required=True, choices=DESTINATION_TYPES)
    place.add_argument("--name", help="shown in lists (default: where it is)")
    sftp = place.add_argument_group("sftp and sfmc")
    sftp.add_argument("--host")
    sftp.add_argument("--port", type=int, help=f"default {DEFAULT_PORT}")
    sftp.add_argument("--username")
    sftp.add_argument("--path", help="the folder files go to (it must exist)")
    pin = sftp.add_mutually_exclusive_group()
    pin.add_argument(
        "--host-key", dest="hostKey", metavar="LINE", help="the server's host key: a known_hosts line or SHA256:…"
    )
    pin.add_argument("--host-key-file", metavar="FILE", help="a file of known_hosts lines (what ssh-keyscan prints)")
    login = sftp.add_mutually_exclusive_group()
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin (typed: no echo)")
    generate = "the service makes a key pair; prints its public key"
    login.add_argument("--generate-key", dest="generateKey", action="store_true", default=None, help=generate)
    s3 = place.add_argument_group("s3")
    s3.add_argument("--bucket")
    s3.add_argument("--prefix", help="the folder in the bucket")
    s3.add_argument("--region")
    s3.add_argument(
        "--role-arn", dest="roleArn", metavar="ROLE_ARN", help="a role in the partner's account, assumed per delivery"
    )
    s3.add_argument("--external-id", dest="externalId", metavar="EXTERNAL_ID", help="the role's external id")
    s3.add_argument("--acl", choices=S3_ACLS)
    place.add_argument("--pgp-key-file", metavar="FILE", help="ASCII-armoured OpenPGP public key to encrypt to")
    place.add_argument(
        "--file-name", dest="fileName", metavar="TEMPLATE", help=f"delivered name, e.g. '{DEFAULT_FILE_NAME}'"
    )
    json_flag(place, "answer")


def add_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    sub = add_parser("destinations", help="a campaign's destinations: add, list, test, remove, deliveries")
    actions = sub.add_subparsers(dest="destinations_command", required=True, metavar="ACTION")
    _add_parser(actions.add_parser)
    json_flag(
        subcommand(actions.add_parser, "list", "the campaign's destinations (never their secrets)", run=cmd_list),
        "list",
    )
    for action, run, text in (
        ("test", cmd_test, "connect, check the host key and write and remove a small file"),
        ("remove", cmd_remove, "remove it (schedules stop naming it)"),
    ):
        subcommand(actions.add_parser, action, text, "destination_id", run=run)
    deliveries = "an export's deliveries to its destinations"
    json_flag(subcommand(actions.add_parser, "deliveries", deliveries, "export_id", run=cmd_deliveries), "list")
