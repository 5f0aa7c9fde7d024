"""The `schedules` collection (SPEC §12): saved requests with a cron, their ticks and their runs.

- `schedules`: one document per schedule, the fields of export_core/schedules.py's ScheduleRequest plus
  `id`, `campaignId`, `createdBy`, `createdAt`, `paused`, `pausedReason`, a `slot` (0..limit-1, unique
  per campaign: concurrent POSTs never pass MAX_SCHEDULES_PER_CAMPAIGN) and `evaluatedUntil`, the
  instant up to which its ticks have been handled (set to its creation, and to the moment of a resume
  or a cron/time zone change: no tick from before then ever fires).
- `schedule_ticks`: ticks that were missed while the stack was down, `{_id: "{scheduleId}:{scheduledFor}"}`,
  so recording one twice changes nothing.
- the runs themselves are export records carrying `schedule: {id, scheduledFor}` (export_core/records.py
  keeps one per tick with a unique index); `manual: true` marks a run asked for through the API.

A schedule that pauses itself (SCHEDULE_PAUSE_AFTER_FAILURES failed or expired runs in a row) pushes
`{event: "schedule.paused", at, exportId}` (the run whose failure paused it) onto its `notify` list in the
same update: the webhook sensor turns it into deliveries as it does for export ends
(export_pipelines/webhook_delivery.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database

from export_core.delivered import DeliveredRows
from export_core.records import (
    EXPIRED,
    FAILED,
    FINISHED,
    OUTBOX_FIELD,
    PENDING,
    TRIGGERED,
    CreateResult,
    ExportStore,
    RequestOptions,
    utcnow,
)
from export_core.schedules import ScheduleRequest, next_runs
from export_core.slots import insert_in_free_slot
from export_core.views import to_json
from export_core.vocabulary import ENDED, PAUSED_EVENT

SCHEDULES = "schedules"
TICKS = "schedule_ticks"
RUNS_SHOWN = 50

# `runs[].outcome` (docs/schedules.md): what became of each tick.
OUTCOMES = ("queued", "running", "delivered", "skipped_empty", "failed", "expired", "missed")
_OUTCOME = {PENDING: "queued", TRIGGERED: "running", FINISHED: "delivered", FAILED: "failed", EXPIRED: "expired"}
# Storage details the API does not show.
HIDDEN = ("_id", "slot", "evaluatedUntil", "resumedAt", OUTBOX_FIELD)


class TooManySchedules(Exception):
    """The campaign has its maximum of schedules already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"This campaign already has {limit} schedules; remove one before adding another.")
        self.limit = limit


def tick_id(schedule_id: str, scheduled_for: datetime) -> str:
    return f"{schedule_id}:{scheduled_for.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def outcome(record: dict[str, Any]) -> str:
    """A run's outcome from its export record: FINISHED without rows and file under skipEmpty is `skipped_empty`."""
    status = str(record.get("status"))
    if status == FINISHED and (record.get("meta") or {}).get("skipped") == "empty":
        return "skipped_empty"
    return _OUTCOME.get(status, status.lower())


def run_view(record: dict[str, Any]) -> dict[str, Any]:
    """One entry of `runs`: `{scheduledFor, exportId, status, count, window?, outcome, manual?}`."""
    schedule = record.get("schedule") or {}
    view: dict[str, Any] = {
        "scheduledFor": schedule.get("scheduledFor"),
        "exportId": record.get("id"),
        "status": record.get("status"),
        "count": record.get("count"),
        "outcome": outcome(record),
    }
    if record.get("window") is not None:
        view["window"] = record["window"]
    if schedule.get("manual"):
        view["manual"] = True
    return dict(to_json(view))


def missed_view(tick: dict[str, Any]) -> dict[str, Any]:
    return dict(
        to_json(
            {"scheduledFor": tick["scheduledFor"], "exportId": None, "status": None, "count": None, "outcome": "missed"}
        )
    )


def schedule_view(doc: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """A schedule as the API shows it, with `nextRuns` after `now` (none while it is paused)."""
    view = dict(to_json({k: v for k, v in doc.items() if k not in HIDDEN}))
    after = now or utcnow()
    view["nextRuns"] = [] if doc.get("paused") else next_runs(str(doc["cron"]), str(doc["timezone"]), after)
    return view


class ScheduleStore:
    """Create, read, change and remove schedules; queue their runs; record missed ticks; pause them."""

    def __init__(self, db: Database) -> None:
        self.schedules = db[SCHEDULES]
        self.ticks = db[TICKS]
        self.exports = ExportStore(db)
        self.delivered = DeliveredRows(db)

    def ensure_indexes(self) -> None:
        """Idempotent: the per-campaign limit (slots), lists, missed ticks, the outbox and the delivered
        rows; the export records' one-per-tick index is ExportStore's."""
        self.schedules.create_index([("campaignId", ASCENDING), ("slot", ASCENDING)], name="one_per_slot", unique=True)
        self.schedules.create_index([("paused", ASCENDING)], name="by_paused")
        self.schedules.create_index([(f"{OUTBOX_FIELD}.at", ASCENDING)], name="schedule_outbox", sparse=True)
        self.ticks.create_index([("scheduleId", ASCENDING), ("scheduledFor", DESCENDING)], name="by_schedule")
        self.delivered.ensure_indexes()

    # -- schedules --

    def create(self, *, campaign_id: str, request: ScheduleRequest, created_by: str, limit: int) -> dict[str, Any]:
        """Insert a schedule in a free slot; TooManySchedules when the campaign has `limit` already."""

        def doc() -> dict[str, Any]:
            schedule_id, now = uuid.uuid4().hex, utcnow()
            return {
                "_id": schedule_id,
                "id": schedule_id,
                "campaignId": campaign_id,
                **request.fields(),
                "pausedReason": None,
                "createdBy": created_by,
                "createdAt": now,
                "evaluatedUntil": now,
            }

        return insert_in_free_slot(self.schedules, campaign_id, limit, doc, TooManySchedules(limit))

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]:
        return list(
            self.schedules.find({"campaignId": campaign_id}).sort([("createdAt", ASCENDING), ("_id", ASCENDING)])
        )

    def get(self, campaign_id: str, schedule_id: str) -> dict[str, Any] | None:
        """One of the campaign's schedules (never another campaign's)."""
        return self.schedules.find_one({"_id": schedule_id, "campaignId": campaign_id})

    def update(self, campaign_id: str, schedule_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a PATCH's changes; None when there is no such schedule.

        A resume (`paused: false`) clears `pausedReason`; it and a new cron or time zone move
        `evaluatedUntil` to now, so the ticks of the time it was paused (or of the old cron) never fire.
        """
        fields = {**changes, "updatedAt": utcnow()}
        query: dict[str, Any] = {"_id": schedule_id, "campaignId": campaign_id}
        if "cron" in changes or "timezone" in changes:
            fields["evaluatedUntil"] = fields["updatedAt"]
        if changes.get("paused") is False:
            fields["pausedReason"] = None
            current = self.get(campaign_id, schedule_id)
            if current is not None and current.get("paused"):
                # Resumed: the paused time's ticks never fire, and its failures no longer count.
                fields["evaluatedUntil"] = fields["resumedAt"] = fields["updatedAt"]
        if changes.get("paused") is True:
            fields["pausedReason"] = "Paused by a user."
        return self.schedules.find_one_and_update(query, {"$set": fields}, return_document=ReturnDocument.AFTER)

    def delete(self, campaign_id: str, schedule_id: str) -> bool:
        """Remove the schedule, its missed ticks and the keys of the rows it delivered; its exports stay."""
        removed = self.schedules.delete_one({"_id": schedule_id, "campaignId": campaign_id}).deleted_count == 1
        if removed:
            self.ticks.delete_many({"scheduleId": schedule_id})
            self.delivered.forget_schedule(schedule_id)
        return removed

    def unpaused(self) -> list[dict[str, Any]]:
        return list(self.schedules.find({"paused": False}))

    # -- ticks and runs --

    def queue_run(
        self,
        schedule: dict[str, Any],
        scheduled_for: datetime,
        *,
        campaign_name: str,
        manual: bool = False,
        requested_by: str | None = None,
        request_id: str | None = None,
        max_pending: int | None = None,
    ) -> CreateResult:
        """The export record of one run, through the ordinary queue; the existing one if this tick has it.

        A run asked for through the API (`manual`) names who asked and its request id, and counts against
        the campaign's PENDING limit (`max_pending`: TooManyPending) as an export POST does.
        """
        tick: dict[str, Any] = {"id": schedule["id"], "scheduledFor": scheduled_for}
        if manual:
            tick["manual"] = True
        return self.exports.create(
            campaign_id=str(schedule["campaignId"]),
            campaign_name=campaign_name,
            export_type=str(schedule["exportType"]),
            requester_user_id=requested_by or str(schedule.get("createdBy") or ""),
            date_key=schedule.get("dateKey"),
            include_all_markets=schedule.get("includeAllMarkets"),
            request_id=request_id,
            max_pending=max_pending,
            format=str(schedule.get("format") or "csv"),
            options=RequestOptions(
                schedule=tick,
                incremental=bool(schedule.get("incremental")),
                skip_empty=bool(schedule.get("skipEmpty")),
                destinations=tuple(schedule.get("destinations") or ()),
            ),
        )

    def record_missed(self, schedule: dict[str, Any], times: Sequence[datetime]) -> None:
        """Ticks that will not run (the stack was down across them); recording one again changes nothing."""
        for at in times:
            doc = {"scheduleId": schedule["id"], "campaignId": schedule["campaignId"], "scheduledFor": at}
            self.ticks.update_one(
                {"_id": tick_id(str(schedule["id"]), at)},
                {"$setOnInsert": {**doc, "outcome": "missed", "recordedAt": utcnow()}},
                upsert=True,
            )

    def advance(self, schedule: dict[str, Any], until: datetime) -> None:
        """Ticks up to `until` are handled (only forward: a slower concurrent evaluation never moves it back)."""
        self.schedules.update_one(
            {"_id": schedule["_id"], "evaluatedUntil": {"$lt": until}}, {"$set": {"evaluatedUntil": until}}
        )

    def runs(self, schedule_id: str, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
        """`runs` of GET …/{id}: its export records and missed ticks, newest first."""
        records = self.exports.collection.find({"schedule.id": schedule_id}).sort("schedule.scheduledFor", DESCENDING)
        missed = self.ticks.find({"scheduleId": schedule_id}).sort("scheduledFor", DESCENDING)
        entries = [(r["schedule"]["scheduledFor"], run_view(r)) for r in records.limit(limit)]
        entries += [(t["scheduledFor"], missed_view(t)) for t in missed.limit(limit)]
        entries.sort(key=lambda entry: entry[0], reverse=True)
        return [view for _, view in entries[:limit]]

    # -- pausing itself --

    def failure_streak(self, schedule: dict[str, Any], length: int) -> list[dict[str, Any]]:
        """The last `length` ended runs since it was created or resumed, if every one FAILED or EXPIRED."""
        since = schedule.get("resumedAt") or schedule.get("createdAt")
        query: dict[str, Any] = {"schedule.id": schedule["id"], "status": {"$in": list(ENDED)}}
        if since is not None:
            query["schedule.scheduledFor"] = {"$gte": since}
        last = list(self.exports.collection.find(query).sort("schedule.scheduledFor", DESCENDING).limit(length))
        return last if len(last) == length and all(r["status"] in (FAILED, EXPIRED) for r in last) else []

    def pause_after_failures(self, schedule: dict[str, Any], failed: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Pause an unpaused schedule with its reason and a `schedule.paused` outbox entry; None if it was not."""
        now = utcnow()
        reason = f"Paused after {len(failed)} failed or expired runs in a row (the last: export {failed[0]['id']})."
        return self.schedules.find_one_and_update(
            {"_id": schedule["_id"], "paused": False},
            {
                "$set": {"paused": True, "pausedReason": reason, "pausedAt": now, "updatedAt": now},
                "$push": {OUTBOX_FIELD: {"event": PAUSED_EVENT, "at": now, "exportId": failed[0]["id"]}},
            },
            return_document=ReturnDocument.AFTER,
        )
