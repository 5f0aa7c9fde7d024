"""Expected export rows computed straight from the documents with plain Python.

Deliberately shares no code with the export path (no polars, no csv_format): if both
agree, the export is right for a reason other than "it ran the same code twice".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database


def cell(value: Any) -> str:
    """SPEC §3 cell rules, written out independently."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        joined = ";".join(str(v) for v in value if v is not None)
        return ";".join(text(part) for part in joined.split(";"))
    return text(str(value))


def text(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _get(doc: dict[str, Any] | None, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def expected_entries(db: Database, campaign_id: str, include_all_markets: bool = False) -> list[dict[str, str]]:
    markets = sorted(db["markets"].find({"campaignId": campaign_id}), key=lambda m: m["_id"])
    entries = sorted(db["entries"].find({"campaignId": campaign_id}), key=lambda e: e["_id"])
    user_ids = {e.get("userId") for e in entries}
    users = {u["_id"]: u for u in db["users"].find() if u["_id"] in user_ids}
    rows = []
    for market in markets:
        primary = [(e, False) for e in entries if e.get("marketId") == market["_id"]]
        extra = [(e, True) for e in entries if market["_id"] in (e.get("additionalMarkets") or [])]
        for entry, additional in primary + (extra if include_all_markets else []):
            user = users.get(entry.get("userId")) or {}
            snap = entry.get("user") or {}

            def pick(field: str, user: dict[str, Any] = user, snap: dict[str, Any] = snap) -> Any:
                return user.get(field) if user.get(field) is not None else snap.get(field)

            fields = entry.get("fields")
            row = {
                "userId": entry.get("userId"),
                "email": pick("email"),
                "firstName": pick("firstName"),
                "lastName": pick("lastName"),
                "phoneNumber": entry.get("phoneNumber") if entry.get("phoneNumber") is not None else user.get("phone"),
                "postalCode": user.get("postalCode"),
                "countryCode": user.get("countryCode"),
                "marketId": market["_id"],
                "marketName": market.get("name"),
                "marketCity": market.get("city"),
                "marketState": market.get("state"),
                "marketCountryCode": market.get("countryCode"),
                "localeId": entry.get("localeId"),
                "entryDate": _get(entry, "date.created"),
                "allowMarketing": _get(entry, "optIns.allowMarketing"),
                "allowLiveNation": _get(entry, "optIns.allowLiveNation"),
                "allowPromoter": _get(entry, "optIns.allowPromoter"),
                "allowSms": _get(entry, "optIns.allowSms"),
                "phoneConfirmed": entry.get("phoneConfirmed"),
                "codes": entry.get("codes"),
                "isAdditionalMarket": additional,
                "fields": json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str) if fields else None,
            }
            rows.append({k: cell(v) for k, v in row.items()})
    return rows
