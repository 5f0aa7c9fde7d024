"""JSON log lines, one object per line, for the API and the export runs (dagster-free).

`JsonFormatter` writes `time`, `level`, `logger`, `message`, then whichever of
`request_id`, `export_id`, `run_id`, `step` and the access-log fields (`method`, `route`,
`status`, `duration_ms`) the LogRecord carries (as attributes, e.g. through `extra=`). For
records Dagster emits, `run_id` and `step` come from `record.dagster_meta` when present.

Defense in depth: the message and traceback text are scrubbed of bearer tokens / JWTs,
e-mail addresses and phone numbers. The first line of defense is not logging user data at
all (route templates instead of paths, ids we generated instead of ids we were sent).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("request_id", "export_id", "run_id", "step")
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")

JWT_PATTERN = re.compile(r"\beyJ[\w-]*\.[\w-]*\.[\w-]*")
BEARER_PATTERN = re.compile(r"(?i)\bbearer\s+\S+")
EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# International numbers (+...) and North-American style 555-123-4567 / (555) 123-4567; plain digit
# runs are left alone (ids, counts and epoch millis look like them).
PHONE_PATTERN = re.compile(r"\+\d[\d ().-]{6,}\d|\(\d{3}\)\s*\d{3}[-. ]\d{4}|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b")
_SCRUBBERS = (
    (JWT_PATTERN, "[token]"),
    (BEARER_PATTERN, "Bearer [token]"),
    (EMAIL_PATTERN, "[email]"),
    (PHONE_PATTERN, "[phone]"),
)


def scrub(text: str) -> str:
    """`text` without tokens, e-mail addresses or phone numbers."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


def looks_sensitive(text: str) -> bool:
    """True when `text` contains something `scrub` would remove."""
    return any(pattern.search(text) for pattern, _ in _SCRUBBERS)


# Fields every line of this process carries unless the record has its own: a run worker runs
# one export, so its request id and export id are bound once, when the run starts.
_BOUND: dict[str, Any] = {}


def bind(**fields: Any) -> None:
    """Set process-wide context fields (request_id, export_id) for every later line."""
    _BOUND.update({k: v for k, v in fields.items() if k in CONTEXT_FIELDS and v is not None})


def _iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        meta = getattr(record, "dagster_meta", None)
        if isinstance(meta, dict):
            if meta.get("run_id"):
                line["run_id"] = meta["run_id"]
            if meta.get("step_key"):
                line["step"] = meta["step_key"]
        for name in (*CONTEXT_FIELDS, *ACCESS_FIELDS):
            value = getattr(record, name, None)
            if value is None:
                value = _BOUND.get(name)
            if value is not None and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)
