"""Every collection an export reads, declared once: its columns (path and type), hence the query
that flattens it, how its raw BSON batches become polars columns, and how rows join users,
snapshots and markets.

Reading. The server flattens what we need (a `$project` with `$path` expressions) and returns raw
BSON batches through pymongo's public raw-batch cursors: `find_raw_batches` for a collection
alone, `aggregate_raw_batches` for one joined to its users. The users join is the database's:
one aggregation per query, `$match` → `$sort` by `_id` → `$lookup` (`localField`/`foreignField`
on `users._id`: an index seek per document) → `$unwind` → `$project` flattening the user's
fields into the row, so the client never looks a user up. SPEC §2's name fallback (user document field by field,
else the entry's snapshot) is `with_names`, applied to the joined rows.

Decoding (the hot path). pymongoarrow turns each batch into Arrow columns in C, with the schema
given and strict: a value whose BSON type differs from its column's type raises instead of
silently becoming null, and that batch alone is decoded again in Python with the same value
rules (`text`, `flag`, `number`, ...), so no value is ever lost or changed. A free-form document
(the entry's `fields`) becomes JSON text straight from its raw bytes, remembered by those bytes
(custom answers repeat), without a Python object per row.

Snapshots and markets are small per campaign or read once. Costs: docs/performance.md.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import bson
import polars as pl
import pyarrow as pa
from bson.decimal128 import Decimal128
from pymongo.database import Database

from export_pipelines.exports.contract import ExportContext, NoMarketsFound

# pymongoarrow 1.15 is built against pyarrow 25.0.0 and warns, on import, that some pyarrow
# classes grew (25.0.1 adds fields at their end; the layout it uses is unchanged). Only those
# warnings are silenced; the oracle tests prove the decoded values.
warnings.filterwarnings("ignore", message=r"pyarrow\.lib\.\w+ size changed", category=RuntimeWarning)
from pymongoarrow.context import PyMongoArrowContext  # noqa: E402
from pymongoarrow.schema import Schema  # noqa: E402

UTC_MS = pl.Datetime("ms", "UTC")
JSON = pl.Object  # marker dtype: a free-form document, exported as JSON text (pl.String in frames)
RAW_BATCH_SIZE = 10_000
PART_SUFFIX = ".arrow"  # staged parts (write_part)
# A joined source's rows as the server gives them: the user under USER, the position of that
# user among the document's matches (`$unwind`) and the BSON type of the document's user id.
USER, USER_MATCH, USER_ID_TYPE = "__user", "__userMatch", "__userIdType"
# The row's identity for incremental exports (SPEC §12): its source document's `_id`, as text (the
# server's `$toString`, which is also what Python's `str` gives for ObjectId, string and integer ids).
ROW_KEY = "__rowKey"
NO_USER_ID = ("array", "null", "missing")  # user id types that join no user (Source.pipeline)
_CODEC: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(tz_aware=True)

# -- value rules (the Python decoder; pymongoarrow gives the same for values of the right type) --


def text(value: Any) -> str | None:
    return None if value is None else str(value)


def flag(value: Any) -> bool | None:
    """A boolean field; anything else in it ("no", 1) is a missing value, not a guess."""
    return value if isinstance(value, bool) else None


def number(value: Any) -> float | None:
    """A numeric field as a float (numeric strings parsed); anything else is a missing value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    as_float = number(value)
    return int(as_float) if as_float is not None and math.isfinite(as_float) else None


def timestamp(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def strings(value: Any) -> list[str] | None:
    return [str(v) for v in value if v is not None] if isinstance(value, list) else None


def json_text(value: Any) -> str | None:
    """A free-form document as the export writes it: keys sorted, non-ASCII kept, dates as text."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str) if value else None


_PYTHON_RULES: dict[Any, Any] = {
    pl.String: text,
    pl.Boolean: flag,
    pl.Float64: number,
    pl.Int64: integer,
    UTC_MS: timestamp,
    pl.List(pl.String): strings,
}
_ARROW_TYPES: dict[Any, pa.DataType] = {
    pl.String: pa.string(),
    pl.Boolean: pa.bool_(),
    pl.Float64: pa.float64(),
    pl.Int64: pa.int64(),
    UTC_MS: pa.timestamp("ms"),
    pl.List(pl.String): pa.list_(pa.string()),
}


# -- declarations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """An output column: the value at `path` (dotted) of each document, of type `dtype`."""

    name: str
    path: str
    dtype: Any = pl.String

    @property
    def kind(self) -> str:
        """The server-side `$type` of the column's value, decoded alongside it where pymongoarrow is lenient."""
        return f"__type_{self.name}"

    @property
    def checked(self) -> bool:
        """pymongoarrow converts some values of other types instead of refusing them (any non-array to [],
        a boolean to 1, NaN to null): for these columns the server says each value's type."""
        return self.dtype is JSON or self.dtype in _LENIENT


# BSON types pymongoarrow decodes into each lenient column exactly as the Python rules do.
_LENIENT: dict[Any, frozenset[str]] = {
    pl.List(pl.String): frozenset({"array", "missing", "null"}),
    pl.Float64: frozenset({"double", "int", "long", "missing", "null"}),
    pl.Int64: frozenset({"int", "long", "missing", "null"}),
}


def col(name: str, dtype: Any = pl.String, path: str | None = None) -> Column:
    return Column(name, path or name, dtype)


@dataclass(frozen=True)
class Source:
    """One collection as columns: query, Arrow schema and both decoders derive from `columns`.

    A source joined to its users (`with_users`) names the field holding each document's user id
    in `users_on`; its user columns read the joined document under USER.
    """

    collection: str
    columns: tuple[Column, ...]
    users_on: str | None = None

    def only(self, *names: str) -> Source:
        """The same source reading fewer columns (fewer bytes on the wire)."""
        unknown = set(names) - {c.name for c in self.columns}
        if unknown:
            raise ValueError(f"{self.collection} has no column(s) {sorted(unknown)}")
        return replace(self, columns=tuple(c for c in self.columns if c.name in names))

    def with_row_key(self) -> Source:
        """The same source with each document's ROW_KEY (an incremental export's anti-join key)."""
        return replace(self, columns=(*self.columns, Column(ROW_KEY, "_id")))

    def with_users(self, *names: str, columns: tuple[Column, ...] | None = None) -> Source:
        """The same source with each document's user (users `_id` = its USER_COLUMN field) joined by
        the database: the user's `columns` (USER_COLUMNS by default; only `names` of them if given,
        fewer bytes) as columns of the row. The source's own columns win: a user column of the same
        name is not read (scoring has its own countryCode and postalCode)."""
        offered = USER_COLUMNS if columns is None else columns
        unknown = set(names) - {c.name for c in offered}
        if unknown:
            raise ValueError(f"users have no column(s) {sorted(unknown)}")
        own = {c.name for c in self.columns}
        joined = tuple(
            Column(c.name, f"{USER}.{c.path}", c.dtype)
            for c in offered
            if c.name not in own and (not names or c.name in names)
        )
        return replace(self, columns=self.columns + joined, users_on=USER_COLUMN[self.collection])

    @cached_property
    def projection(self) -> dict[str, Any]:
        """Flat documents from the server: each column under its own name, nothing else."""
        projection: dict[str, Any] = {"_id": 0}
        for column in self.columns:
            if column.path == "_id":
                projection[column.name] = {"$toString": "$_id"}
            else:
                projection[column.name] = 1 if column.path == column.name else f"${column.path}"
            if column.checked:
                projection[column.kind] = {"$type": f"${column.path}"}
        if self.users_on is not None:
            projection[USER_MATCH] = 1
            projection[USER_ID_TYPE] = {"$type": f"${self.users_on}"}
        return projection

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The polars schema of a decoded batch."""
        return {c.name: pl.String if c.dtype is JSON else c.dtype for c in self.columns}

    @cached_property
    def _arrow_schema(self) -> Schema:
        fields: dict[str, pa.DataType] = {}
        for column in self.columns:
            if column.dtype is not JSON:
                fields[column.name] = _ARROW_TYPES[column.dtype]
            if column.checked:
                fields[column.kind] = pa.string()
        if self.users_on is not None:
            fields[USER_MATCH] = pa.int64()
            fields[USER_ID_TYPE] = pa.string()
        return Schema(fields)

    def decode(self, raw: bytes) -> pl.DataFrame:
        """One raw BSON batch as columns; a batch holding an unexpected type is decoded in Python."""
        try:
            context = PyMongoArrowContext(self._arrow_schema)
            context.process_bson_stream(raw)
            frame = pl.from_arrow(context.finish())
        except TypeError:  # pymongoarrow: "Got unexpected type X instead of expected type Y"
            return self._decode_python(raw)
        assert isinstance(frame, pl.DataFrame)
        if not self._exact(frame):
            return self._decode_python(raw)
        cells: list[pl.Series | pl.Expr] = []
        for column in self.columns:
            if column.dtype is JSON:
                kinds = frame.get_column(column.kind).to_list()
                cells.append(pl.Series(column.name, _json_cells(raw, kinds, column.name), dtype=pl.String))
            elif column.dtype == UTC_MS:
                cells.append(pl.col(column.name).dt.replace_time_zone("UTC"))
            elif column.dtype == pl.List(pl.String):
                cells.append(pl.col(column.name).list.drop_nulls())
            else:
                cells.append(pl.col(column.name))
        if self.users_on is not None:
            cells += [pl.col(USER_MATCH), pl.col(USER_ID_TYPE)]
        return self._one_user(frame.select(cells))

    def _exact(self, frame: pl.DataFrame) -> bool:
        """Whether every lenient column holds only the types it decodes exactly (and no NaN became null)."""
        for column in self.columns:
            allowed = _LENIENT.get(column.dtype)
            if allowed is None:
                continue
            kinds = frame.get_column(column.kind)
            if not kinds.is_in(list(allowed)).all():
                return False
            if column.dtype == pl.Float64 and (frame.get_column(column.name).is_null() & (kinds == "double")).any():
                return False  # NaN: pymongoarrow gives null, the Python rules keep NaN
        return True

    def _decode_python(self, raw: bytes) -> pl.DataFrame:
        docs = bson.decode_all(raw, _CODEC)
        values: dict[str, list[Any]] = {}
        for column in self.columns:
            rule = json_text if column.dtype is JSON else _PYTHON_RULES[column.dtype]
            nested = column.path != column.name and column.dtype is not JSON
            cells = []
            for doc in docs:
                value = doc.get(column.name)
                # A `$a.b` path through an array yields an array: `a` was not a document.
                cells.append(None if nested and isinstance(value, list) else rule(value))
            values[column.name] = cells
        schema = dict(self.schema)
        if self.users_on is not None:
            values[USER_MATCH] = [doc.get(USER_MATCH) for doc in docs]
            values[USER_ID_TYPE] = [doc.get(USER_ID_TYPE) for doc in docs]
            schema |= {USER_MATCH: pl.Int64, USER_ID_TYPE: pl.String}
        return self._one_user(pl.DataFrame(values, schema=schema))

    def _one_user(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A joined batch as one row per document: the rows `$unwind` repeated for a user id that
        is an array (one per matching user) dropped, and no user for an id that is an array,
        null or missing (on MongoDB null matches a user whose `_id` is null)."""
        if self.users_on is None:
            return frame
        repeated = frame.get_column(USER_MATCH) > 0
        if repeated.any():
            frame = frame.filter(~repeated.fill_null(False))
        no_user = frame.get_column(USER_ID_TYPE).is_in(NO_USER_ID)
        if no_user.any():
            frame = frame.with_columns(
                pl.when(~no_user).then(pl.col(c.name)).alias(c.name)
                for c in self.columns
                if c.path.startswith(f"{USER}.")
            )
        return frame.drop(USER_MATCH, USER_ID_TYPE)

    def pipeline(self, query: dict[str, Any], *, sort: bool = True) -> list[dict[str, Any]]:
        """The aggregation that reads the source with its users: `$match`, `$sort` by `_id`,
        `$lookup` on `users._id`, `$unwind` of the match, then the flattening `$project`.

        The `$lookup` is the `localField`/`foreignField` form, an index seek per document; never
        the `let` + `$expr` pipeline form, which scans `users` once per document on the local
        server. `$unwind` (keeping documents without a user) costs the local server less than
        picking the first match with an expression; the rare rows it repeats, for a user id that
        is an array, are dropped by the decoder (`_one_user`), which also says which ids join no
        user.
        """
        if self.users_on is None:
            raise ValueError(f"{self.collection}: a source without users is read with find")
        stages: list[dict[str, Any]] = [{"$match": query}]
        if sort:
            stages.append({"$sort": {"_id": 1}})
        stages += [
            {"$lookup": {"from": "users", "localField": self.users_on, "foreignField": "_id", "as": USER}},
            {"$unwind": {"path": f"${USER}", "preserveNullAndEmptyArrays": True, "includeArrayIndex": USER_MATCH}},
            {"$project": self.projection},
        ]
        return stages

    def read(
        self, db: Database, query: dict[str, Any], *, sort: bool = True, batch_size: int = RAW_BATCH_SIZE
    ) -> Iterator[pl.DataFrame]:
        """The matching documents as decoded batches, in `_id` order unless `sort` is off: a `find`
        for a source alone, one aggregation (`pipeline`) for a source joined to its users."""
        collection = db[self.collection]
        if self.users_on is None:
            order = [("_id", 1)] if sort else None
            cursor: Any = collection.find_raw_batches(query, self.projection, sort=order, batch_size=batch_size)
        else:
            cursor = collection.aggregate_raw_batches(self.pipeline(query, sort=sort), batchSize=batch_size)
        with cursor:
            for raw in cursor:
                frame = self.decode(raw)
                if frame.height:
                    yield frame


def _json_cells(raw: bytes, kinds: list[str | None], key: str) -> list[str | None]:
    """JSON text of the document `key` of each raw document, from its bytes.

    `kinds` is the server's `$type` of that value per document. An object whose element header
    occurs exactly once in its document is sliced out and converted once per distinct bytes;
    anything else (another type, an ambiguous header) is decoded with the Python rules. The loop
    runs once per row, so it reads sizes in place and binds its lookups to locals.
    """
    header = b"\x03" + key.encode() + b"\x00"
    cells: list[str | None] = []
    append, find, size_at = cells.append, raw.find, _INT32.unpack_from
    converted = _JSON_CACHE
    if len(converted) > JSON_CACHE_SIZE:
        converted.clear()
    position = 0
    for kind in kinds:
        end = position + size_at(raw, position)[0]
        if kind == "object":
            at = find(header, position + 4, end)
            if at >= 0 and find(header, at + 1, end) < 0:
                start = at + len(header)
                chunk = raw[start : start + size_at(raw, start)[0]]
                cell = converted.get(chunk, _NOT_CONVERTED)
                if cell is _NOT_CONVERTED:
                    cell = converted[chunk] = json_text(bson.decode(chunk, _CODEC))
                append(cell)
                position = end
                continue
        append(
            None if kind in ("missing", "null", None) else json_text(bson.decode(raw[position:end], _CODEC).get(key))
        )
        position = end
    return cells


_INT32 = struct.Struct("<i")
_NOT_CONVERTED: Any = object()
_JSON_CACHE: dict[bytes, str | None] = {}
JSON_CACHE_SIZE = 20_000  # distinct `fields` objects kept; free-form answers would grow it with N


# -- the campaign's collections -------------------------------------------------------------

ENTRIES = Source(
    "entries",
    (
        col("userId"),
        col("marketId"),
        col("additionalMarkets", pl.List(pl.String)),
        col("localeId"),
        col("entryDate", UTC_MS, "date.created"),
        col("allowMarketing", pl.Boolean, "optIns.allowMarketing"),
        col("allowLiveNation", pl.Boolean, "optIns.allowLiveNation"),
        col("allowPromoter", pl.Boolean, "optIns.allowPromoter"),
        col("allowSms", pl.Boolean, "optIns.allowSms"),
        col("phoneNumber"),
        col("phoneConfirmed", pl.Boolean),
        col("codes", pl.List(pl.String)),
        col("fields", JSON),
        col("snapFirstName", path="user.firstName"),
        col("snapLastName", path="user.lastName"),
        col("snapEmail", path="user.email"),
    ),
)
# Each entry's user id and name snapshot, for rows keyed by a user id instead of an entry.
SNAPSHOTS = ENTRIES.only("userId", "snapFirstName", "snapLastName", "snapEmail")

# A user document's fields as columns of the rows joined to it (Source.with_users).
USER_COLUMNS = (
    col("userFirstName", path="firstName"),
    col("userLastName", path="lastName"),
    col("userEmail", path="email"),
    col("userPhone", path="phone"),
    col("postalCode"),
    col("countryCode"),
)

SCORING = Source(
    "scoring",
    (
        col("memberId"),
        col("marketId"),
        col("locale"),
        col("countryCode"),
        col("score", pl.Float64),
        col("fanscore", pl.Float64),
        col("nudata", pl.Float64),
        col("lat", pl.Float64, "geo.lat"),
        col("lon", pl.Float64, "geo.lon"),
        col("postalCode", path="geo.postalCode"),
        col("verified", pl.Boolean),
        col("selected", pl.Boolean),
        col("rank", pl.Int64),
    ),
)

CODES = Source(
    "codes",
    (
        col("code"),
        col("marketId"),
        col("status"),
        col("assignedTo"),
        col("assignedAt", UTC_MS, "date.assigned"),
        col("waveDateKey"),
    ),
)

# The field (and column) of each source holding the row's user id (users join, CCPA membership).
USER_COLUMN = {"entries": "userId", "scoring": "memberId", "codes": "assignedTo"}
SOURCES = {"entries": ENTRIES, "scoring": SCORING, "codes": CODES}


# -- reading with joins ---------------------------------------------------------------------


def with_names(frame: pl.DataFrame) -> pl.DataFrame:
    """email, firstName, lastName from the user document, field by field falling back to the snapshot."""
    return frame.with_columns(
        email=pl.coalesce("userEmail", "snapEmail"),
        firstName=pl.coalesce("userFirstName", "snapFirstName"),
        lastName=pl.coalesce("userLastName", "snapLastName"),
    )


SNAPSHOTS_DATASET = "snapshots"


def extract_snapshots(ctx: ExportContext) -> None:
    """Every entry's user id and name snapshot, for rows keyed by a user id instead of an entry."""
    write_parts(ctx, SNAPSHOTS.read(ctx.db, {"campaignId": ctx.campaign_id}), SNAPSHOTS_DATASET)


def read_snapshots(ctx: ExportContext) -> pl.DataFrame:
    """One name snapshot per user id: that of the user's first entry (by `_id`)."""
    return (
        read_all(ctx, SNAPSHOTS_DATASET, SNAPSHOTS.schema)
        .filter(pl.col("userId").is_not_null())
        .unique(subset="userId", keep="first", maintain_order=True)
    )


def join_snapshots(frame: pl.DataFrame, snapshots: pl.DataFrame, user_column: str) -> pl.DataFrame:
    """`frame` with names resolved, its `user_column` matched to the snapshots' userId."""
    joined = frame.join(snapshots.rename({"userId": user_column}), on=user_column, how="left", maintain_order="left")
    return with_names(joined)


def write_parts(
    ctx: ExportContext, frames: Iterable[pl.DataFrame], name: str, prefix: str = "part", *, counted: int = 0
) -> int:
    """Each frame as its own staged part of dataset `name`; returns rows.

    In the thread that reads: reading ahead in a second thread cost more CPU in thread hand-offs
    than it overlapped (docs/performance.md). Progress reports `counted` (rows extracted before
    this dataset) plus the rows written here.
    """
    out_dir = ctx.extract_path(name)
    rows = 0
    for number, frame in enumerate(frames):
        write_part(frame, out_dir / f"{prefix}-{number:06d}{PART_SUFFIX}")
        rows += frame.height
        ctx.progress("extract", counted + rows, ctx.expected_rows)
    return rows


def extract_source(
    ctx: ExportContext,
    source: Source,
    match: dict[str, Any],
    *,
    name: str,
    prefix: str = "part",
    counted: int = 0,
) -> int:
    """The campaign's documents of `source` matching `match`, by `_id` (with their users when the
    source is joined to them), staged as parts of dataset `name`; returns rows."""
    frames = source.read(ctx.db, {"campaignId": ctx.campaign_id, **match})
    return write_parts(ctx, frames, name, prefix, counted=counted)


def write_part(frame: pl.DataFrame, path: Path) -> None:
    """Stage a frame: Arrow IPC, uncompressed. Staged parts live minutes and are read once,
    whole, so their format is the in-memory one (Parquet cost more: docs/performance.md)."""
    frame.write_ipc(path, compression="uncompressed")


def _read_ipc(path: Path) -> pl.DataFrame | pl.Series:
    """A staged part read by pyarrow: a third of the CPU of `pl.read_ipc`, which hands the read to
    polars' async executor threads (docs/performance.md)."""
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    return pl.from_arrow(table)


# Parts staged before 2026-12-04 are Parquet: a failed export re-executed after an upgrade reads them.
_PART_READERS: dict[str, Any] = {PART_SUFFIX: _read_ipc, ".parquet": pl.read_parquet}


def read_part(path: Path) -> pl.DataFrame:
    frame = _PART_READERS[path.suffix](path)
    assert isinstance(frame, pl.DataFrame)
    return frame


def part_paths(directory: Path) -> list[Path]:
    """The staged parts of a directory in the order they were written (their names sort so)."""
    return sorted(path for path in directory.glob("*") if path.suffix in _PART_READERS)  # none: no directory


def parts(ctx: ExportContext, name: str) -> Iterator[pl.DataFrame]:
    """The parts of an extracted dataset in the order they were written."""
    for path in part_paths(ctx.extract_path(name)):
        yield read_part(path)


def read_all(ctx: ExportContext, name: str, schema: dict[str, Any]) -> pl.DataFrame:
    """A whole extracted dataset as one frame (for joins), empty with `schema` when nothing was found."""
    return read_directory(ctx.extract_path(name), schema)


def read_directory(directory: Path, schema: dict[str, Any]) -> pl.DataFrame:
    """Every staged part of a directory as one frame, empty with `schema` when there is none."""
    paths = part_paths(directory)
    if not paths:
        return pl.DataFrame(schema=schema)
    return pl.concat([read_part(path) for path in paths])


# -- markets: a few documents per campaign, read whole ----------------------------------------

MARKETS = "markets"
MARKET_SCHEMA: dict[str, Any] = {
    "marketId": pl.String,
    "marketName": pl.String,
    "marketCity": pl.String,
    "marketState": pl.String,
    "marketCountryCode": pl.String,
    "eventName": pl.String,
    "eventDate": UTC_MS,
    "venue": pl.String,
    "eventLink": pl.String,
    "promoterIds": pl.List(pl.String),
}


def nested(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def extract_markets(ctx: ExportContext, *, required: bool) -> list[dict[str, Any]]:
    """The campaign's markets (by `_id`) with their event and promoters; `required` fails without any."""
    markets = list(ctx.db["markets"].find({"campaignId": ctx.campaign_id}).sort("_id", 1))
    if required and not markets:
        raise NoMarketsFound(ctx.campaign_id)
    rows = [
        (
            str(m["_id"]),
            text(m.get("name")),
            text(m.get("city")),
            text(m.get("state")),
            text(m.get("countryCode")),
            text(nested(m, "event.name")),
            timestamp(nested(m, "event.date")),
            text(nested(m, "event.venue")),
            text(nested(m, "event.ticketLink")),
            strings(m.get("promoterIds")),
        )
        for m in markets
    ]
    frame = pl.DataFrame(rows, schema=MARKET_SCHEMA, orient="row")
    write_part(frame, ctx.extract_path(MARKETS) / f"markets{PART_SUFFIX}")
    return markets


def read_markets(ctx: ExportContext) -> pl.DataFrame:
    return read_all(ctx, MARKETS, MARKET_SCHEMA)
