"""What the commands print: one-line summaries, tables (tab-separated for scripts), JSON, progress."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from export_cli.api import EXIT_EXPORT_FAILED, CliError

# What `progress.rows` / `progress.total` count in each stage; anything else counts rows.
STAGE_UNITS = {"extract": "rows", "transform": "rows", "upload": "files", "finished": "rows"}


def say(text: str) -> None:
    print(text, flush=True)


def say_json(answer: Any) -> None:
    say(json.dumps(answer, indent=2))


def note(text: str) -> None:
    """A hint on stderr, beside the answer on stdout; a closed stderr is no failure."""
    with contextlib.suppress(OSError):
        print(f"export-service: {text}", file=sys.stderr)


def summary(record: dict[str, Any]) -> str:
    parts = [str(record.get("id")), str(record.get("status")), str(record.get("exportType"))]
    if record.get("count") is not None:
        parts.append(f"{record['count']} rows")
    key = record.get("key")
    if key:
        parts.append(", ".join(key) if isinstance(key, list) else str(key))
    return "  ".join(parts)


def failure(record: dict[str, Any]) -> CliError:
    error = record.get("error") or {}
    message = " ".join(str(error.get("message") or f"the export is {record.get('status')}").split())
    return CliError(f"export {record.get('id')} {record.get('status')}: {message}", EXIT_EXPORT_FAILED)


def table(header: list[str], rows: list[list[str]], footer: str) -> None:
    """Rows as a table on a terminal; tab-separated, nothing truncated, for scripts."""
    if not sys.stdout.isatty():
        for row in [header, *rows]:
            say("\t".join(row))
        say(footer)
        return
    from rich.console import Console
    from rich.table import Table

    grid = Table(*header, box=None)
    grid.columns[0].no_wrap = True
    for row in rows:
        grid.add_row(*row)
    console = Console()
    console.print(grid)
    console.print(footer)


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


def progress_text(record: dict[str, Any]) -> str:
    description, _, _, count = _progress(record)
    return f"{description} {count}" if count else description


@contextmanager
def progress_display() -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar on a terminal; one line per change otherwise."""
    if not sys.stdout.isatty():
        last: list[str] = []

        def plain(record: dict[str, Any]) -> None:
            text = progress_text(record)
            if not last or last[-1] != text:
                last.append(text)
                say(text)

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
