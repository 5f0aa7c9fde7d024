"""`webhooks add|list|remove|deliveries`: a campaign's subscriptions to export and schedule events."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from export_cli.api import EXIT_OK, EXIT_USAGE, Api, CliError, campaign_path
from export_cli.commands import json_flag, subcommand
from export_cli.output import note, say, say_json, table
from export_core.vocabulary import WEBHOOK_EVENTS


def _events(text: str) -> list[str]:
    events = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if not events or unknown:
        raise CliError(f"--events takes a comma-separated list of: {', '.join(WEBHOOK_EVENTS)}", EXIT_USAGE)
    return events


def cmd_add(api: Api, args: argparse.Namespace) -> int:
    body = {"url": args.webhook_url, "events": _events(args.events)}
    created = api.request("POST", campaign_path(args.campaign_id, "webhooks"), json=body)
    if args.json:
        say_json(created)
        return EXIT_OK
    say(f"webhook {created['id']}  {','.join(created['events'])}  {created['url']}")
    say(f"secret {created['secret']}")
    note("keep the secret now; it is never shown again (it verifies the signatures)")
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    found = api.request("GET", campaign_path(args.campaign_id, "webhooks"))
    if args.json:
        say_json(found)
        return EXIT_OK
    rows = [
        [str(h["id"]), ",".join(h["events"]), str(h["url"]), str(h.get("createdAt", ""))] for h in found["webhooks"]
    ]
    table(["id", "events", "url", "created"], rows, f"{len(rows)} webhook(s)")
    return EXIT_OK


def cmd_remove(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", campaign_path(args.campaign_id, "webhooks", args.webhook_id))
    say(f"removed webhook {args.webhook_id}")
    return EXIT_OK


def cmd_deliveries(api: Api, args: argparse.Namespace) -> int:
    path = campaign_path(args.campaign_id, "webhooks", args.webhook_id, "deliveries")
    page = api.request("GET", path, params={"limit": args.limit, "page": args.page})
    if args.json:
        say_json(page)
        return EXIT_OK
    rows = []
    for delivery in page["deliveries"]:
        last = (delivery.get("attempts") or [{}])[0]
        result = last.get("httpStatus") or last.get("error") or ""
        rows.append(
            [str(delivery["id"]), str(delivery["event"]), str(delivery["exportId"]), str(delivery["status"]),
             str(len(delivery.get("attempts") or [])), str(result), str(delivery.get("nextAttemptAt") or "")]
        )  # fmt: skip
    table(["id", "event", "export", "status", "attempts", "last", "next attempt"], rows, f"{len(rows)} delivery(ies)")
    return EXIT_OK


def add_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    sub = add_parser("webhooks", help="a campaign's webhooks: add, list, remove, deliveries")
    actions = sub.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    hook = subcommand(
        actions.add_parser, "add", "subscribe URL to export events; prints the signing secret, once", run=cmd_add
    )
    # Not `url`: that is the API's own address (--url).
    hook.add_argument("webhook_url", metavar="URL", help="https:// URL that receives the signed POSTs")
    hook.add_argument("--events", default=",".join(WEBHOOK_EVENTS), help="comma-separated (default: all of them)")
    json_flag(hook, "answer")
    json_flag(
        subcommand(actions.add_parser, "list", "the campaign's webhooks (never their secrets)", run=cmd_list), "list"
    )
    subcommand(actions.add_parser, "remove", "unsubscribe one webhook", "webhook_id", run=cmd_remove)
    deliveries = "a webhook's deliveries and their last attempt, newest first"
    hook = subcommand(actions.add_parser, "deliveries", deliveries, "webhook_id", run=cmd_deliveries)
    hook.add_argument("--limit", type=int, default=20)
    hook.add_argument("--page", type=int, default=0)
    json_flag(hook, "page")
