"""The shapes every resource's subcommands share: `ACTION campaign_id [ID …]` and `--json`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

AddParser = Callable[..., argparse.ArgumentParser]


def subcommand(
    add_parser: AddParser, name: str, text: str, *ids: str, run: Callable[..., Any]
) -> argparse.ArgumentParser:
    """A subcommand on one campaign (and the ids after it), answered by `run`."""
    sub = add_parser(name, help=text)
    for positional in ("campaign_id", *ids):
        sub.add_argument(positional)
    sub.set_defaults(run=run)
    return sub


def json_flag(sub: argparse.ArgumentParser, what: str) -> argparse.ArgumentParser:
    """`--json`: the API's answer as it came, for scripts."""
    sub.add_argument("--json", action="store_true", help=f"print the {what} as JSON")
    return sub
