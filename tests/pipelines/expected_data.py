"""Expected rows of the data exports, computed straight from the documents with plain Python.

Like expected.py (whose SPEC §3 `cell` rules it reuses), it shares no code with the export
path: no polars, no csv_format, no export module. Wave files are read from S3 with the
standard library's csv module. Each function returns rows as {column: cell} dicts, in the
order the export writes them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

from pymongo.database import Database

from tests.pipelines.expected import cell

# The eleven types these expectations cover (the other four are entries and the reminder e-mails).
DATA_TYPES = (
    "codes", "scoring", "codeAssignments", "artistOptIn", "artistSmsOptIn", "livenationOptIn",
    "verifiedEntries", "codeWaves", "fanlist", "waitlist", "promoterEmailOptIn",
)  # fmt: skip

Row = dict[str, str]
Doc = dict[str, Any]


def dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _by_id(db: Database, collection: str, campaign_id: str) -> list[Doc]:
    return sorted(db[collection].find({"campaignId": campaign_id}), key=lambda d: d["_id"])


def _users(db: Database) -> dict[Any, Doc]:
    return {u["_id"]: u for u in db["users"].find()}


def _first_snapshots(db: Database, campaign_id: str) -> dict[Any, Doc]:
    """userId → the `user` snapshot of that user's first entry (by entry _id)."""
    first: dict[Any, Doc] = {}
    for entry in _by_id(db, "entries", campaign_id):
        if entry.get("userId") is not None and entry["userId"] not in first:
            first[entry["userId"]] = entry.get("user") if isinstance(entry.get("user"), dict) else {}
    return first


def _name(user: Doc, snapshot: Doc, field: str) -> Any:
    """SPEC §2 fallback, field by field: the user document, else the entry's snapshot."""
    return user.get(field) if user.get(field) is not None else snapshot.get(field)


def _row(values: dict[str, Any]) -> Row:
    return {k: cell(v) for k, v in values.items()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# -- codes ----------------------------------------------------------------------------


def _code_values(code: Doc) -> dict[str, Any]:
    return {
        "code": code.get("code"),
        "marketId": code.get("marketId"),
        "status": code.get("status"),
        "assignedTo": code.get("assignedTo"),
        "assignedAt": dig(code, "date.assigned"),
        "waveDateKey": code.get("waveDateKey"),
    }


def expected_codes(db: Database, campaign_id: str) -> list[Row]:
    return [_row(_code_values(c)) for c in _by_id(db, "codes", campaign_id)]


def expected_code_waves(db: Database, campaign_id: str, date_key: str) -> list[Row]:
    rows = []
    for code in _by_id(db, "codes", campaign_id):
        if str(code.get("waveDateKey")) == date_key:
            v = _code_values(code)
            rows.append(
                _row({k: v[k] for k in ("code", "marketId", "assignedTo", "waveDateKey", "status", "assignedAt")})
            )
    return rows


def expected_code_assignments(db: Database, campaign_id: str) -> list[Row]:
    users, snapshots = _users(db), _first_snapshots(db, campaign_id)
    markets = {m["_id"]: m for m in db["markets"].find({"campaignId": campaign_id})}
    rows = []
    for code in _by_id(db, "codes", campaign_id):
        if code.get("status") != "assigned":
            continue
        holder = code.get("assignedTo")
        user, snap = users.get(holder) or {}, snapshots.get(holder) or {}
        market = markets.get(code.get("marketId")) or {}
        rows.append(
            _row(
                {
                    "code": code.get("code"),
                    "userId": holder,
                    "email": _name(user, snap, "email"),
                    "marketId": code.get("marketId"),
                    "eventName": dig(market, "event.name"),
                    "assignedAt": dig(code, "date.assigned"),
                    "firstName": _name(user, snap, "firstName"),
                    "lastName": _name(user, snap, "lastName"),
                    "marketName": market.get("name"),
                    "eventDate": dig(market, "event.date"),
                    "venue": dig(market, "event.venue"),
                    "waveDateKey": code.get("waveDateKey"),
                }
            )
        )
    return rows


# -- scoring --------------------------------------------------------------------------


def _scoring_values(record: Doc) -> dict[str, Any]:
    return {
        "memberId": record.get("memberId"),
        "marketId": record.get("marketId"),
        "score": _float(record.get("score")),
        "fanscore": _float(record.get("fanscore")),
        "nudata": _float(record.get("nudata")),
        "verified": _bool(record.get("verified")),
        "selected": _bool(record.get("selected")),
        "rank": record.get("rank"),
        "locale": record.get("locale"),
        "countryCode": record.get("countryCode"),
        "lat": _float(dig(record, "geo.lat")),
        "lon": _float(dig(record, "geo.lon")),
        "postalCode": dig(record, "geo.postalCode"),
    }


def expected_scoring(db: Database, campaign_id: str) -> list[Row]:
    return [_row(_scoring_values(r)) for r in _by_id(db, "scoring", campaign_id)]


def expected_verified_entries(db: Database, campaign_id: str) -> list[Row]:
    columns = ("memberId", "marketId", "score", "selected", "fanscore", "nudata", "rank", "locale", "countryCode")
    return [
        _row({k: _scoring_values(r)[k] for k in columns})
        for r in _by_id(db, "scoring", campaign_id)
        if r.get("verified") is True
    ]


_DEPTH = re.compile(r"^[^/]+/[^/]+\.csv$", re.IGNORECASE)


def wave_members(s3: Any, bucket: str, campaign_id: str) -> set[str]:
    """Member ids of every wave file waves/{campaignId}/{dateKey}/*.csv, read with the csv module."""
    prefix = f"waves/{campaign_id}/"
    members: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not _DEPTH.match(obj["Key"][len(prefix) :]):
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("utf-8-sig")
            lines = csv.reader(io.StringIO(body, newline=""))
            header = next(lines, None)
            if header is None:  # an empty file schedules nobody
                continue
            column = header.index("memberId")
            members.update(m for m in (row[column].strip() for row in lines if len(row) > column) if m)
    return members


def expected_waitlist(db: Database, campaign_id: str, excluded: set[str]) -> list[Row]:
    users, snapshots = _users(db), _first_snapshots(db, campaign_id)
    rows = []
    for record in _by_id(db, "scoring", campaign_id):
        member = record.get("memberId")
        if record.get("selected") is True or member in excluded:
            continue
        user, snap = users.get(member) or {}, snapshots.get(member) or {}
        values = _scoring_values(record)
        rows.append(
            _row(
                {
                    "memberId": member,
                    "email": _name(user, snap, "email"),
                    "marketId": values["marketId"],
                    "locale": values["locale"],
                    "score": values["score"],
                    "firstName": _name(user, snap, "firstName"),
                    "lastName": _name(user, snap, "lastName"),
                    "countryCode": values["countryCode"],
                    "rank": values["rank"],
                    "fanscore": values["fanscore"],
                }
            )
        )
    return rows


# -- entries: opt-ins, fan list, promoters ----------------------------------------------


def _person(entry: Doc, user: Doc) -> dict[str, Any]:
    snap = entry.get("user") if isinstance(entry.get("user"), dict) else {}
    return {
        "email": _name(user, snap, "email"),
        "firstName": _name(user, snap, "firstName"),
        "lastName": _name(user, snap, "lastName"),
    }


def _opted_in(db: Database, campaign_id: str, opt_in: str) -> list[Doc]:
    return [e for e in _by_id(db, "entries", campaign_id) if dig(e, f"optIns.{opt_in}") is True]


def expected_opt_in(db: Database, campaign_id: str, opt_in: str) -> list[Row]:
    """artistOptIn (allowMarketing) and livenationOptIn (allowLiveNation)."""
    users = _users(db)
    markets = {m["_id"]: m for m in db["markets"].find({"campaignId": campaign_id})}
    rows = []
    for entry in _opted_in(db, campaign_id, opt_in):
        user = users.get(entry.get("userId")) or {}
        person = _person(entry, user)
        rows.append(
            _row(
                {
                    "userId": entry.get("userId"),
                    **person,
                    "marketId": entry.get("marketId"),
                    "localeId": entry.get("localeId"),
                    "postalCode": user.get("postalCode"),
                    "marketName": (markets.get(entry.get("marketId")) or {}).get("name"),
                    "countryCode": user.get("countryCode"),
                    "entryDate": dig(entry, "date.created"),
                }
            )
        )
    return rows


def expected_sms_opt_in(db: Database, campaign_id: str) -> list[Row]:
    users = _users(db)
    markets = {m["_id"]: m for m in db["markets"].find({"campaignId": campaign_id})}
    rows = []
    for entry in _opted_in(db, campaign_id, "allowSms"):
        phone = entry.get("phoneNumber")
        if phone is None or not str(phone).strip():
            continue
        confirmed = entry.get("phoneConfirmed") is True
        user = users.get(entry.get("userId")) or {}
        person = _person(entry, user)
        rows.append(
            _row(
                {
                    "userId": entry.get("userId"),
                    "firstName": person["firstName"],
                    "lastName": person["lastName"],
                    "phoneNumber": phone if confirmed else None,
                    "marketId": entry.get("marketId"),
                    "phoneConfirmed": confirmed,
                    "marketName": (markets.get(entry.get("marketId")) or {}).get("name"),
                    "localeId": entry.get("localeId"),
                    "countryCode": user.get("countryCode"),
                    "entryDate": dig(entry, "date.created"),
                }
            )
        )
    return rows


def expected_fanlist(db: Database, campaign_id: str) -> list[Row]:
    users = _users(db)
    names = {m["_id"]: m.get("name") for m in db["markets"].find({"campaignId": campaign_id})}
    fans: dict[Any, dict[str, Any]] = {}  # insertion order = order of each fan's first entry
    for entry in _by_id(db, "entries", campaign_id):
        user_id = entry.get("userId")
        if user_id is None:
            continue
        fan = fans.setdefault(user_id, {"entry": entry, "markets": []})
        for market in [entry.get("marketId"), *(entry.get("additionalMarkets") or [])]:
            if market in names and market not in fan["markets"]:
                fan["markets"].append(market)
    rows = []
    for user_id, fan in fans.items():
        if not fan["markets"]:
            continue
        user = users.get(user_id) or {}
        rows.append(
            _row(
                {
                    "userId": user_id,
                    **_person(fan["entry"], user),
                    "markets": fan["markets"],
                    "marketNames": [names[m] or "" for m in fan["markets"]],
                    "postalCode": user.get("postalCode"),
                    "countryCode": user.get("countryCode"),
                }
            )
        )
    return rows


def expected_promoter_files(db: Database, campaign_id: str, file_of: Callable[[str], str]) -> dict[str, list[Row]]:
    """File name in the ZIP → rows; `file_of(promoterId)` names a promoter's file (the test states it)."""
    users = _users(db)
    markets = {m["_id"]: m for m in db["markets"].find({"campaignId": campaign_id})}
    promoters = {p["_id"]: p for p in db["promoters"].find()}
    files: dict[str, list[Row]] = {}
    for entry in _opted_in(db, campaign_id, "allowPromoter"):
        market = markets.get(entry.get("marketId"))
        if market is None:
            continue
        user = users.get(entry.get("userId")) or {}
        seen = []
        for promoter_id in market.get("promoterIds") or []:
            if promoter_id in seen:
                continue
            seen.append(promoter_id)
            files.setdefault(file_of(promoter_id), []).append(
                _row(
                    {
                        "userId": entry.get("userId"),
                        **_person(entry, user),
                        "marketId": entry.get("marketId"),
                        "promoterName": (promoters.get(promoter_id) or {}).get("name"),
                        "promoterId": promoter_id,
                        "marketName": market.get("name"),
                        "localeId": entry.get("localeId"),
                        "postalCode": user.get("postalCode"),
                        "countryCode": user.get("countryCode"),
                        "entryDate": dig(entry, "date.created"),
                    }
                )
            )
    return files
