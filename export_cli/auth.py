"""`token`: a dev-mode token from POST /dev/token, for EXPORT_SERVICE_TOKEN."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from export_cli.api import EXIT_OK, Api
from export_cli.output import say

# The body's fields are the API's DevTokenRequest (export_api/models/service.py); the client cannot import the API.


def cmd_token(api: Api, args: argparse.Namespace) -> int:
    body = {
        "userId": args.user_id,
        "campaignId": args.campaign,
        "permissions": args.permission or ["REPORT"],
        "supreme": args.supreme,
        "expiresIn": args.expires_in,
    }
    say(str(api.request("POST", "/dev/token", auth=False, json=body)["token"]))
    return EXIT_OK


def add_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    sub = add_parser("token", help="dev mode: mint a token through POST /dev/token")
    sub.add_argument("--user-id", default="admin-1")
    sub.add_argument("--campaign", default="123", help="campaign the permissions apply to (default 123)")
    sub.add_argument("--permission", action="append", help="repeatable (default REPORT)")
    sub.add_argument("--supreme", action="store_true", help="supreme token (CCPA, every campaign)")
    sub.add_argument("--expires-in", type=int, default=3600, help="seconds (default 3600)")
    sub.set_defaults(run=cmd_token)
