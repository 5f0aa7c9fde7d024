"""Incremental and `since` exports (SPEC §12): which rows a run reads, and which it writes.

Every row exactly once, across a schedule's successful runs, is decided by row identity, never by a
time cursor: an entry written late with an old `date.created`, or several at a run's boundary with
one timestamp, is new because its key was never delivered, whatever its time says.

- extract (`row_filter`): one scan of the keys (`_id` only) the type's filter matches, minus the keys
  the schedule's FINISHED exports delivered (export_core/delivered.py), becomes `_id: {$in: new}`
  on the rows query, so the database sends only the new rows (none at all on an empty run). The
  first run, or one with more than MAX_IN_IDS new rows, reads every row instead.
- transform (`new_rows`): every frame is anti-joined on ROW_KEY against the keys the rows query did
  not leave out — those of runs that FINISHED since the extract (a re-execution from failure may
  follow another run of the schedule), or all of them when the extract read every row — and the keys
  written are staged beside the file.
- finish (`save_delivered`): the staged keys are stored before the record is marked FINISHED; they
  count from then on. A run that FAILED or EXPIRED delivered nothing: the next one covers its rows.

A `since` request (one-off) adds `created after since` to the rows query; its type's source says
which date that is (ExportType.since_field). Costs: docs/performance.md "Incremental exports".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import bson
import polars as pl

from export_core.delivered import DeliveredRows
from export_core.records import utcnow
from export_pipelines.exports.contract import ExportContext
from export_pipelines.exports.sources import ROW_KEY, SOURCES

# New keys sent as one `$in` (about 17 bytes each for an ObjectId): past this a run reads every row
# and the anti-join drops the delivered ones.
MAX_IN_IDS = 100_000
KEY_BATCH = 50_000
WINDOW_FILE = "incremental.json"
KEYS_FILE = "delivered-keys.json"


def is_incremental(record: dict[str, Any]) -> bool:
    return bool(record.get("incremental")) and bool((record.get("schedule") or {}).get("id"))


def _delivered_exports(ctx: ExportContext) -> list[str]:
    return DeliveredRows(ctx.db).delivered_exports(str(ctx.record["schedule"]["id"]), exclude=ctx.export_id)


def row_filter(ctx: ExportContext, match: dict[str, Any]) -> dict[str, Any]:
    """What the rows query of this export adds to the type's `match`: `since`, and the new keys.

    Stages the window the run covers (WINDOW_FILE) for the record (`window`, SPEC §12).
    """
    record, export_type = ctx.record, ctx.export_type
    extra: dict[str, Any] = {}
    since = record.get("since")
    if since is not None and export_type.since_field is not None:
        extra[export_type.since_field] = {"$gt": since}
    if not is_incremental(record):
        if since is not None:
            _stage_window(ctx, {"since": since, "until": utcnow()})
        return extra
    exports = _delivered_exports(ctx)
    delivered = DeliveredRows(ctx.db).keys(exports)
    window: dict[str, Any] = {
        "until": utcnow(),
        "previousExports": len(exports),
        "previouslyDelivered": len(delivered),
        "excluded": [],  # the exports whose rows the rows query leaves out already
    }
    if not delivered:
        _stage_window(ctx, window)
        return extra
    collection = ctx.db[SOURCES[export_type.source].collection]
    query = {"campaignId": ctx.campaign_id, **match, **extra}
    new: list[Any] = []
    with collection.find_raw_batches(query, {"_id": 1}, batch_size=KEY_BATCH) as cursor:
        for raw in cursor:
            new += [doc["_id"] for doc in bson.decode_all(raw) if str(doc["_id"]) not in delivered]
    window["newKeysScanned"] = len(new)
    if len(new) > MAX_IN_IDS:
        _stage_window(ctx, window)
        return extra
    _stage_window(ctx, {**window, "excluded": exports})
    return {**extra, "_id": {"$in": new}}


def _stage_window(ctx: ExportContext, window: dict[str, Any]) -> None:
    (ctx.work_dir / WINDOW_FILE).write_text(json.dumps(window, default=_iso))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def new_rows(ctx: ExportContext, frames: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The frames of an incremental export without the rows its schedule delivered; stages the keys it
    lets through (KEYS_FILE) once the last frame is taken. Other exports' frames pass as they are."""
    if not is_incremental(ctx.record):
        yield from frames
        return
    # Only the exports the rows query did not leave out: those that FINISHED since the extract (a
    # re-execution after another run of the schedule), or all of them when the extract read every row.
    excluded = set(json.loads((ctx.work_dir / WINDOW_FILE).read_text()).get("excluded", []))
    delivered = DeliveredRows(ctx.db).keys(e for e in _delivered_exports(ctx) if e not in excluded)
    old = pl.Series(ROW_KEY, list(delivered), dtype=pl.String)
    written: dict[str, None] = {}
    for frame in frames:
        if old.len():
            frame = frame.filter(~pl.col(ROW_KEY).is_in(old))
        written.update(dict.fromkeys(frame.get_column(ROW_KEY).to_list()))
        yield frame
    (ctx.work_dir / KEYS_FILE).write_text(json.dumps(list(written)))


def finish_fields(ctx: ExportContext) -> dict[str, Any]:
    """The record's `window` (what the run covered), and the delivered keys saved: call before FINISHED."""
    window_path = ctx.work_dir / WINDOW_FILE
    if not window_path.exists():
        return {}
    window = json.loads(window_path.read_text())
    window.pop("excluded", None)
    for field in ("since", "until"):
        if field in window:
            window[field] = datetime.fromisoformat(window[field])
    keys_path = ctx.work_dir / KEYS_FILE
    if is_incremental(ctx.record) and keys_path.exists():
        keys = json.loads(keys_path.read_text())
        store = DeliveredRows(ctx.db)
        store.ensure_indexes()
        store.save(schedule_id=str(ctx.record["schedule"]["id"]), export_id=ctx.export_id, keys=keys)
        window["newRows"] = len(keys)
    return {"window": window}


def needed(ctx: ExportContext) -> tuple[str, ...]:
    """The extra columns an export's rows carry: ROW_KEY for an incremental one."""
    return (ROW_KEY,) if is_incremental(ctx.record) else ()
