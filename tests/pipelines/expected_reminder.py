"""Expected reminder e-mail rows computed straight from the documents with plain Python.

Shares no code with the export path (no polars, no sfmc module, no csv_format): SPEC §5's
tables are written out again here, so the defaults are checked against the spec too.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pymongo.database import Database

from tests.pipelines.expected import cell

COLUMNS = [
    "email", "firstName", "locale", "campaignName", "artistName", "eventName", "eventDate", "venue",
    "eventLink", "code", "presaleName", "presaleDate", "campaignType", "region", "mid", "countryCode",
    "marketId", "memberId",
]  # fmt: skip
REQUIRED = ["email", "firstName", "locale", "campaignName", "artistName", "eventName", "eventDate", "venue",
            "eventLink", "code"]  # fmt: skip

REGION = {"US": "NA", "CA": "NA", "MX": "NA", "GB": "UK", "IE": "UK"}
MID = {"US": "7222895", "CA": "7222895", "MX": "523000091", "GB": "1314420", "IE": "1362441", "DE": "1347780",
       "AU": "1341602"}  # fmt: skip
REGION_MID = {"NA": "7222895", "UK": "1314420"}
LOCALE_MAP = {"en-mx": "en-us", "en-uk": "en-gb", "en-nz": "en-au"}
PRESALE = {"standard": "Verified Fan Presale", "fanclub": "Fan Club Presale"}


def sfmc_locale(raw: str | None) -> str:
    if raw is None or not re.fullmatch(r"[A-Za-z0-9_-]{1,35}", raw.strip(" \t\r\n")):
        return "en-us"
    value = raw.strip(" \t\r\n").lower().replace("_", "-")
    value = LOCALE_MAP.get(value, value)
    return value if re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{1,8})*", value) else "en-us"


def _get(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def expected_reminder_rows(db: Database, campaign_id: str) -> list[tuple[str, dict[str, str]]]:
    """(region/locale, formatted row) per selected scoring record, in scoring `_id` order."""
    campaign = db["campaigns"].find_one({"_id": campaign_id}) or {}
    markets = {m["_id"]: m for m in db["markets"].find({"campaignId": campaign_id})}
    users = {u["_id"]: u for u in db["users"].find()}
    entries: dict[str, dict[str, Any]] = {}
    for entry in sorted(db["entries"].find({"campaignId": campaign_id}), key=lambda e: e["_id"]):
        entries.setdefault(entry.get("userId"), entry)
    codes: dict[tuple[str, str], dict[str, Any]] = {}
    for code in db["codes"].find({"campaignId": campaign_id, "status": "assigned"}):
        key = (code.get("assignedTo"), code.get("marketId"))
        best = codes.get(key)
        assigned = _get(code, "date.assigned")
        if best is None:
            codes[key] = code
            continue
        best_assigned = _get(best, "date.assigned")
        newer = assigned is not None and (best_assigned is None or assigned > best_assigned)
        same = assigned == best_assigned and code["code"] < best["code"]
        if newer or same:
            codes[key] = code
    campaign_type = campaign.get("type") or "standard"
    rows = []
    selected = db["scoring"].find({"campaignId": campaign_id, "selected": True})
    for score in sorted(selected, key=lambda s: s["_id"]):
        member = score.get("memberId")
        user = users.get(member) or {}
        snap = (entries.get(member) or {}).get("user") or {}
        market = markets.get(score.get("marketId")) or {}
        country = _first(score.get("countryCode"), user.get("countryCode"), market.get("countryCode"))
        country = country.strip().upper() if country else None
        region = REGION.get(country or "", "NA")
        locale = sfmc_locale(_first(score.get("locale"), (entries.get(member) or {}).get("localeId")))
        presale = _get(campaign, "date.presale")
        row: dict[str, Any] = {
            "email": _first(user.get("email"), snap.get("email")),
            "firstName": _first(user.get("firstName"), snap.get("firstName")),
            "locale": locale,
            "campaignName": campaign.get("name"),
            "artistName": _get(campaign, "artist.name"),
            "eventName": _get(market, "event.name"),
            "eventDate": _get(market, "event.date"),
            "venue": _get(market, "event.venue"),
            "eventLink": _get(market, "event.ticketLink"),
            "code": (codes.get((member, score.get("marketId"))) or {}).get("code"),
            "presaleName": PRESALE.get(campaign_type, PRESALE["standard"]),
            "presaleDate": presale if isinstance(presale, datetime) else None,
            "campaignType": campaign_type,
            "region": region,
            "mid": MID.get(country or "", REGION_MID[region]),
            "countryCode": country,
            "marketId": score.get("marketId"),
            "memberId": member,
        }
        rows.append((f"{region}/{locale}", {k: cell(row[k]) for k in COLUMNS}))
    return rows


def segmented(rows: list[tuple[str, dict[str, str]]], max_rows: int) -> dict[str, list[dict[str, str]]]:
    """ZIP member name → rows, `{file}_{n}.csv` of at most `max_rows` rows each, in order."""
    by_file: dict[str, list[dict[str, str]]] = {}
    for name, row in rows:
        by_file.setdefault(name, []).append(row)
    out = {}
    for name, file_rows in by_file.items():
        for n, start in enumerate(range(0, len(file_rows), max_rows), start=1):
            out[f"{name}_{n}.csv"] = file_rows[start : start + max_rows]
    return out
