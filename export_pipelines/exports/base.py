"""What every export type module gets to work with, and the errors it may raise."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import polars as pl
from pymongo.database import Database

from export_pipelines.domain.export_types import ExportType
from export_pipelines.domain.settings import Settings

RAW_BATCH_SIZE = 10_000
PREFETCH_BATCHES = 1  # batches read ahead while the current one is turned into columns


class PermanentExportError(Exception):
    """Bad data or a request that can never succeed: fail at once, do not retry."""


class NoMarketsFound(PermanentExportError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"NoMarketsFound: campaign {campaign_id!r} has no markets")


@dataclass
class ExportContext:
    """One export being produced: its record, its campaign and where its scratch files go."""

    record: dict[str, Any]
    campaign: dict[str, Any]
    export_type: ExportType
    db: Database
    s3: Any
    settings: Settings
    work_dir: Path
    log: logging.Logger | Any

    @property
    def campaign_id(self) -> str:
        return str(self.record["campaignId"])

    @property
    def export_id(self) -> str:
        return str(self.record["_id"])

    def extract_path(self, name: str) -> Path:
        """Directory of one extracted dataset (Parquet parts), created on demand."""
        path = self.work_dir / "extract" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def decode_raw_batches(raw_batches: Iterable[bytes]) -> Iterator[list[dict[str, Any]]]:
    """Documents of each raw BSON batch; only one batch is ever decoded at a time."""
    codec: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(tz_aware=True)
    for raw in raw_batches:
        docs = bson.decode_all(raw, codec)
        if docs:
            yield docs


def prefetched(items: Iterable[Any], depth: int = PREFETCH_BATCHES) -> Iterator[Any]:
    """`items`, produced by a background thread up to `depth` ahead of the consumer.

    Reading a batch is mostly waiting for the database (the socket releases the GIL), turning
    it into columns is CPU: overlapped, an extract takes about the longer of the two instead
    of their sum. Errors of the producer are raised here, in the consumer; when the consumer
    stops early (an error, a cancelled run) the producer stops at its next item.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer("item", item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            offer("error", error)
        else:
            offer("done", None)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator is closed by the thread that ran it (its cursor with it)

    producer = threading.Thread(target=produce, name="prefetch", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        # Not for long: a producer stuck in a slow query stops on its own once it returns, and
        # it only ever hands batches over (the consumer writes the files).
        producer.join(timeout=5)


def write_parts(
    batches: Iterable[list[dict[str, Any]]],
    to_frame: Callable[[list[dict[str, Any]]], pl.DataFrame],
    out_dir: Path,
    prefix: str,
) -> int:
    """Write each batch as its own Parquet part (the next batch is read meanwhile); returns the rows written."""
    rows = 0
    for number, docs in enumerate(prefetched(batches)):
        frame = to_frame(docs)
        frame.write_parquet(out_dir / f"{prefix}-{number:06d}.parquet")
        rows += frame.height
    return rows


def scan_parts(directory: Path) -> Iterator[pl.DataFrame]:
    """The Parquet parts of a dataset in the order they were written."""
    for path in sorted(directory.glob("*.parquet")):
        yield pl.read_parquet(path)


def nested(doc: dict[str, Any], dotted: str) -> Any:
    """doc['a']['b'] for 'a.b', None when any level is missing or not a document."""
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
