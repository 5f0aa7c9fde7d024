"""`codeWaves`: the codes released in the wave `dateKey` (the request's epoch-millis string), by code `_id`."""

from __future__ import annotations

from typing import Any

from export_pipelines.exports.contract import ExportContext, PermanentExportError, TypeLogic


def match(ctx: ExportContext) -> dict[str, Any]:
    """Codes whose `waveDateKey` is the request's dateKey (stored as a string, or as a number by older writers)."""
    date_key = ctx.record.get("dateKey")
    if not isinstance(date_key, str) or not date_key.isascii() or not date_key.isdigit():
        # The API refuses such requests; a record written some other way can never export.
        raise PermanentExportError("This codeWaves export has no valid dateKey (a numeric string).")
    return {"waveDateKey": {"$in": [date_key, int(date_key)]}}


LOGIC = TypeLogic(match=match)
