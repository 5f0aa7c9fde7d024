"""The `exports` collection: the only place export records are created or change status.

Every status change is one conditional `find_one_and_update` whose filter names the
statuses it may leave, so two processes can never both win a transition and an illegal
transition is refused instead of silently applied.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from export_core.vocabulary import ACTIVE, EXPIRED, FAILED, FINISHED, PENDING, RERUNNABLE, TRIGGERED

SORT_FIELDS = {"created": "date.created", "status": "status", "exportType": "exportType"}

# The duplicate rule (SPEC §4): one PENDING/TRIGGERED (`active`) record per request key, made race-free
# by a partial unique index. Since formats (SPEC §3) the key counts `format`; the index before them
# (DEDUPE_INDEX_BEFORE_FORMATS, without it) is dropped by ensure_indexes once the new one exists.
DEDUPE_FIELDS = ("campaignId", "exportType", "dateKey", "format")
DEDUPE_INDEX = "one_active_per_request_format"
DEDUPE_INDEX_BEFORE_FORMATS = "one_active_per_request"
DEFAULT_FORMAT = "csv"  # a record without `format` (made before formats existed) is csv
# Statuses whose records hold, or may take back (a re-run), the dedupe slot.
SLOT_STATUSES = (PENDING, TRIGGERED, FAILED, EXPIRED)

# Scheduled runs (SPEC §12): one record per schedule tick, made race-free by a partial unique index over the
# schedule's id, the tick's time and `manual` (a run asked for through the API at a tick's very millisecond is
# still a run of its own). Scheduled records never hold the dedupe slot: a hand-made request is never merged
# into a tick, nor a tick into a hand-made request. Nor do `since` requests (a part of the rows is another
# request than the whole).
SCHEDULE_RUN_INDEX = "one_record_per_schedule_tick"
TAKES_SLOT = {"schedule": {"$exists": False}, "since": {"$exists": False}}

# Webhook outbox (SPEC §11): each end state pushes {event, at} onto `notify` in the same update that
# sets the status, so no end is ever lost between two writes; the webhook sensor turns each entry
# into deliveries and then pulls it (export_pipelines/webhook_delivery.py).
OUTBOX_FIELD = "notify"
# Destination outbox (SPEC §13): FINISHED pushes {destinationId, at} per destination of the record onto
# `deliver` in that same update (none for a run skipped empty: no file); the delivery sensor stores a
# delivery per entry and then pulls it (export_pipelines/destination_delivery.py).
DELIVERY_OUTBOX_FIELD = "deliver"
# Where the record's files went (SPEC §7, §13): `{destinationId, type, name, remotePaths, deliveredAt}` per
# delivery that ended delivered, kept with the record (deliveries themselves are dropped after a while) so a
# CCPA deletion can say which partners hold a copy.
DELIVERED_TO_FIELD = "deliveredTo"


def outbox_entry(status: str, at: datetime) -> dict[str, Any]:
    """`{"event": "export.finished", "at": ...}` for an end state reached at `at`."""
    return {"event": f"export.{status.lower()}", "at": at}


@dataclass(frozen=True)
class RequestOptions:
    """What a request may add to its record beyond the dedupe key (SPEC §12–13), stored as given.

    `schedule` is `{id, scheduledFor}` of the tick that queued it (`manual: true` for a run asked for
    outside the cron); such a record takes no dedupe slot; `since` keeps only rows created
    after it; `incremental` sends only rows its schedule has not delivered; `skipEmpty` ends a run
    without new rows FINISHED with no file; `destinations` are where the file is pushed after.
    """

    schedule: dict[str, Any] | None = None
    since: datetime | None = None
    incremental: bool = False
    skip_empty: bool = False
    destinations: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        """The record's fields for these options; a default is left out, so old records look alike."""
        fields: dict[str, Any] = {}
        if self.schedule is not None:
            fields["schedule"] = self.schedule
        if self.since is not None:
            fields["since"] = self.since
        if self.incremental:
            fields["incremental"] = True
        if self.skip_empty:
            fields["skipEmpty"] = True
        if self.destinations:
            fields["destinations"] = list(self.destinations)
        return fields


class IllegalTransition(Exception):
    """The record is not in a status this transition may leave."""


class TooManyPending(Exception):
    """The campaign already has its maximum of PENDING exports; nothing was queued."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"campaign has {limit} PENDING exports already")
        self.limit = limit


@dataclass(frozen=True)
class CreateResult:
    record: dict[str, Any]
    created: bool


def utcnow() -> datetime:
    """Now, truncated to milliseconds as BSON stores it, so values round-trip exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class ExportStore:
    """Create, read, list and move export records through PENDING → TRIGGERED → end state."""

    def __init__(self, db: Database) -> None:
        # Majority writes whatever the URI says: a status change acknowledged by a primary that
        # then fails over must not be rolled back, or two exports could both end up TRIGGERED.
        self.collection: Collection = db["exports"].with_options(write_concern=WriteConcern("majority"))

    def ensure_indexes(self) -> None:
        """Idempotent; the partial unique index is what makes de-duplication race-free.

        Migrates a database from before formats: records that hold or may take back the dedupe slot
        get `format: "csv"` (what they are), then the index with `format` is built, then the old one
        without it is dropped — in that order, so no moment goes without a dedupe index.
        """
        self.collection.update_many(
            {"status": {"$in": list(SLOT_STATUSES)}, "format": {"$exists": False}},
            {"$set": {"format": DEFAULT_FORMAT}},
        )
        self.collection.create_index(
            [(name, ASCENDING) for name in DEDUPE_FIELDS],
            name=DEDUPE_INDEX,
            unique=True,
            partialFilterExpression={"active": True},
        )
        if DEDUPE_INDEX_BEFORE_FORMATS in self.collection.index_information():
            self.collection.drop_index(DEDUPE_INDEX_BEFORE_FORMATS)
        # At most MAX_PENDING_PER_CAMPAIGN PENDING records per campaign, race-free (see create).
        self.collection.create_index(
            [("campaignId", ASCENDING), ("pendingSlot", ASCENDING)],
            name="pending_slots",
            unique=True,
            partialFilterExpression={"status": PENDING, "pendingSlot": {"$exists": True}},
        )
        self.collection.create_index(
            [("schedule.id", ASCENDING), ("schedule.scheduledFor", DESCENDING), ("schedule.manual", ASCENDING)],
            name=SCHEDULE_RUN_INDEX,
            unique=True,
            partialFilterExpression={"schedule.id": {"$exists": True}},
        )
        self.collection.create_index([("status", ASCENDING), ("date.created", ASCENDING)], name="queue")
        self.collection.create_index([("campaignId", ASCENDING), ("date.created", DESCENDING)], name="by_campaign")
        # CCPA: records whose deletion is unfinished are found without a scan (sparse: few have it).
        self.collection.create_index([("deletion.status", ASCENDING)], name="by_deletion_status", sparse=True)

    # -- create / read ------------------------------------------------------------------

    def create(
        self,
        *,
        campaign_id: str,
        campaign_name: str,
        export_type: str,
        requester_user_id: str,
        date_key: str | None = None,
        include_all_markets: bool | None = None,
        request_id: str | None = None,
        max_pending: int | None = None,
        format: str = DEFAULT_FORMAT,
        options: RequestOptions | None = None,
    ) -> CreateResult:
        """Insert a PENDING record, or return the PENDING/TRIGGERED one with the same request key.

        A scheduled record (`options.schedule`) is never merged with another request: it is inserted
        unless its tick's record exists already, which is then returned (created False). A `since`
        record is never merged either.

        With `max_pending`, a new record is refused (TooManyPending) when the campaign would have
        more PENDING records than that; a duplicate is still returned. Each such record takes a
        free `pendingSlot` (0 .. max_pending-1), which the partial unique index `pending_slots`
        holds while it is PENDING: concurrent requests race for slots, never past the limit, and
        a request is refused only when every slot is taken.

        The record stores its `format` always; a csv request also finds an active record without one
        (written by a version from before formats, before its ensure_indexes ran). `options` adds
        the schedule, incremental and destination fields (RequestOptions) to a new record.
        """
        dedupe = {"campaignId": campaign_id, "exportType": export_type, "dateKey": date_key, "format": format}
        active: dict[str, Any] = {**dedupe, "active": True}
        if format == DEFAULT_FORMAT:
            active["format"] = {"$in": [DEFAULT_FORMAT, None]}
        schedule = options.schedule if options is not None else None
        slotless = schedule is not None or (options is not None and options.since is not None)
        found: dict[str, Any] | None = active  # what an insert refused as a duplicate finds
        if schedule is not None:
            found = {f"schedule.{k}": schedule.get(k) for k in ("id", "scheduledFor", "manual")}
        elif slotless:
            found = None  # a `since` request: never merged, never refused as a duplicate
        elif max_pending is not None:
            existing = self.collection.find_one(active)
            if existing is not None:
                return CreateResult(existing, False)
        for _ in range(10 + (max_pending or 0)):
            export_id = uuid.uuid4().hex
            doc: dict[str, Any] = {
                "_id": export_id,
                "id": export_id,
                **dedupe,
                "campaignName": campaign_name,
                "status": PENDING,
                "requesterUserId": requester_user_id,
                "date": {"created": utcnow()},
            }
            if not slotless:
                doc["active"] = True
            if include_all_markets is not None:
                doc["includeAllMarkets"] = include_all_markets
            if options is not None:
                doc.update(options.fields())
            if request_id is not None:
                doc["requestId"] = request_id  # the engine tags the run with it (export-service/request-id)
            if max_pending is not None:
                doc["pendingSlot"] = self._free_pending_slot(campaign_id, max_pending)
            try:
                self.collection.insert_one(doc)
                return CreateResult(doc, True)
            except DuplicateKeyError as exc:
                if "pendingSlot" in (exc.details or {}).get("keyPattern", {}):
                    continue  # a concurrent request took that slot first: pick again
                existing = self.collection.find_one(found) if found is not None else None
                if existing is not None:
                    return CreateResult(existing, False)
                # The duplicate ended between our insert and our read: try again.
        raise RuntimeError("could not create export record: concurrent requests kept taking its key or slot")

    def _free_pending_slot(self, campaign_id: str, max_pending: int) -> int:
        """A slot no PENDING record of the campaign holds (random, so concurrent requests rarely
        collide); TooManyPending when it has max_pending PENDING records, slot-less ones included."""
        pending = list(
            self.collection.find({"campaignId": campaign_id, "status": PENDING}, {"_id": 0, "pendingSlot": 1})
        )
        if len(pending) >= max_pending:
            raise TooManyPending(max_pending)
        # Fewer records than slots: at least one slot is free.
        return random.choice(sorted(set(range(max_pending)) - {record.get("pendingSlot") for record in pending}))

    def get(self, export_id: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": export_id})

    def list_page(
        self,
        campaign_id: str,
        *,
        export_type: str | None = None,
        page: int = 0,
        limit: int = 20,
        sort: str = "created",
        sort_order: str = "desc",
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a campaign's records and the total count of the filter.

        A page that is not full tells the total by itself, so the count is only asked for a full
        page or one past the end: most lists (a campaign's few exports) cost one round trip.
        """
        query: dict[str, Any] = {"campaignId": campaign_id}
        if export_type is not None:
            query["exportType"] = export_type
        direction = ASCENDING if sort_order == "asc" else DESCENDING
        cursor = (
            self.collection.find(query)
            .sort([(SORT_FIELDS[sort], direction), ("_id", direction)])
            .skip(page * limit)
            .limit(limit)
        )
        records = list(cursor)
        if len(records) < limit and (records or page == 0):
            return records, page * limit + len(records)
        return records, self.collection.count_documents(query)

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """Oldest PENDING records first: the queue order."""
        return list(
            self.collection.find({"status": PENDING})
            .sort([("date.created", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )

    def ended_before(self, cutoff: datetime) -> set[str]:
        """Ids of exports created before `cutoff` that are no longer queued or running."""
        query = {"date.created": {"$lt": cutoff}, "status": {"$in": [FINISHED, FAILED, EXPIRED]}}
        return {str(doc["_id"]) for doc in self.collection.find(query, {"_id": 1})}

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        return list(self.collection.find({"status": {"$in": list(statuses)}}))

    def count_by_type_and_status(self) -> list[dict[str, Any]]:
        return list(
            self.collection.aggregate(
                [{"$group": {"_id": {"exportType": "$exportType", "status": "$status"}, "n": {"$sum": 1}}}]
            )
        )

    # -- transitions --------------------------------------------------------------------

    def _transition(
        self,
        export_id: str,
        allowed_from: tuple[str, ...],
        update: dict[str, Any],
        run_id: str | None = None,
        match: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Apply `update` if the record is in one of `allowed_from` (and, given `run_id`, still that run's;
        given `match`, still matches it)."""
        query: dict[str, Any] = dict(match or {})
        if run_id is not None:
            # A record not yet started has no run: word of its run still applies. Not so for a re-run
            # claimed through the API (`rerun`, no run yet either): that word is of its old run.
            query["$or"] = [{"runId": run_id}, {"runId": None, "rerun": {"$exists": False}}]
        updated = self._apply(export_id, allowed_from, update, query)
        if updated is None:
            current = self.get(export_id)
            state = current["status"] if current else "missing"
            if current and run_id is not None and current.get("runId") not in (run_id, None):
                state += f" by another run ({current['runId']})"
            raise IllegalTransition(f"export {export_id} is {state}; expected one of {', '.join(allowed_from)}")
        return updated

    def _apply(
        self, export_id: str, allowed_from: tuple[str, ...], update: dict[str, Any], match: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The record after `update`, if it is in one of `allowed_from` and matches `match`; else None."""
        query = {"_id": export_id, "status": {"$in": list(allowed_from)}, **match}
        return self.collection.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)

    def attach_run(self, export_id: str, run_id: str) -> None:
        """Remember which Dagster run is (or will be) executing this export."""
        self.collection.update_one({"_id": export_id}, {"$set": {"runId": run_id}})

    def mark_triggered(self, export_id: str, *, run_id: str, preliminary_count: int | None) -> dict[str, Any]:
        """PENDING → TRIGGERED on first start; FAILED/EXPIRED → TRIGGERED on a re-run.

        A re-run takes the request's de-duplication slot back (`active`, SPEC §4), so an
        identical POST returns it while it runs. When a fresh identical request already holds
        the slot (PENDING or TRIGGERED), the re-run goes ahead without it: the fresh record
        keeps the slot and runs on its own; neither is refused, nothing crashes. A scheduled
        record never takes the slot.
        """
        fields: dict[str, Any] = {"status": TRIGGERED, "runId": run_id, "date.triggered": utcnow()}
        if preliminary_count is not None:
            fields["preliminaryCount"] = preliminary_count
        unset = {"error": "", "date.failed": "", "date.expired": "", "rerun": ""}
        # PENDING records hold the slot already; this sets it on re-runs (the partial index
        # refuses it if another active record has the same request key).
        update = {"$set": {**fields, "active": True}, "$unset": unset}
        without_slot = {"$set": fields, "$unset": unset}
        try:
            updated = self._apply(export_id, (PENDING, *RERUNNABLE), update, TAKES_SLOT)
        except DuplicateKeyError:
            return self._transition(export_id, RERUNNABLE, without_slot)
        # None: a scheduled record (no slot), or one in no status this may leave (refused there).
        return updated or self._transition(export_id, (PENDING, *RERUNNABLE), without_slot)

    # -- re-runs asked through the API (POST .../rerun) ------------------------------------
    # claim_rerun (FAILED/EXPIRED → TRIGGERED, `rerun.claim` set, old runId put aside) →
    # the API launches the run → rerun_launched (the new runId) or release_rerun (launch failed:
    # back as it was) → the run starts: start_claimed_rerun (its start time, marker dropped).

    def claim_rerun(self, export_id: str, *, campaign_id: str, requested_by: str) -> tuple[str, dict[str, Any]] | None:
        """FAILED/EXPIRED → TRIGGERED for one re-run; (claim token, the record as it was), or None.

        One conditional update: of identical concurrent calls exactly one wins, and only it
        launches a run. The record takes its dedupe slot back (as `mark_triggered` does; a scheduled
        record takes none). Its old `runId` is put aside: a late sensor tick about the old run's end
        must not end the re-run (`_transition` gives a claimed record no run's word until it carries
        that run's id). Its
        `error` stays until the launch succeeded, so `release_rerun` can put everything back.
        """
        claim = uuid.uuid4().hex
        fields: dict[str, Any] = {
            "status": TRIGGERED,
            "date.triggered": utcnow(),
            "rerun": {"claim": claim, "requestedBy": requested_by},
        }
        query = {"_id": export_id, "campaignId": campaign_id, "status": {"$in": list(RERUNNABLE)}}
        without_slot = {"$set": fields, "$unset": {"runId": ""}}
        try:
            before = self.collection.find_one_and_update(
                {**query, **TAKES_SLOT},
                {"$set": {**fields, "active": True}, "$unset": {"runId": ""}},
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # a fresh identical request holds the slot: it keeps it
            before = None
        if before is None:  # that, a scheduled record, or nothing to re-run
            before = self.collection.find_one_and_update(query, without_slot, return_document=ReturnDocument.BEFORE)
        return None if before is None else (claim, before)

    def rerun_launched(self, export_id: str, *, claim: str, run_id: str) -> dict[str, Any] | None:
        """The claimed re-run's run exists: record its id and drop the old attempt's error and progress.

        None when the run has already started (and took the record over) or the claim is gone.
        """
        return self.collection.find_one_and_update(
            {"_id": export_id, "status": TRIGGERED, "rerun.claim": claim},
            {"$set": {"runId": run_id}, "$unset": {"error": "", "date.failed": "", "date.expired": "", "progress": ""}},
            return_document=ReturnDocument.AFTER,
        )

    def release_rerun(self, export_id: str, *, claim: str, before: dict[str, Any]) -> None:
        """The re-run could not be launched: the record goes back to its status, run and error of `before`."""
        restore: dict[str, Any] = {"status": before["status"]}
        unset: dict[str, Any] = {"rerun": "", "active": ""}
        for field, value in (
            ("runId", before.get("runId")),
            ("date.triggered", before.get("date", {}).get("triggered")),
        ):
            if value is None:
                unset[field] = ""
            else:
                restore[field] = value
        self.collection.update_one(
            {"_id": export_id, "status": TRIGGERED, "rerun.claim": claim}, {"$set": restore, "$unset": unset}
        )

    def start_claimed_rerun(self, export_id: str, *, run_id: str) -> dict[str, Any] | None:
        """The run of a re-run claimed through the API starts: it owns the record from now on.

        `date.triggered` becomes the start (the time it waited in the queue does not count
        towards its runtime); None when the record is not a claimed re-run (any more).
        """
        return self.collection.find_one_and_update(
            {"_id": export_id, "status": TRIGGERED, "rerun": {"$exists": True}},
            {
                "$set": {"runId": run_id, "date.triggered": utcnow()},
                "$unset": {"rerun": "", "error": "", "date.failed": "", "date.expired": "", "progress": ""},
            },
            return_document=ReturnDocument.AFTER,
        )

    def set_preliminary_count(self, export_id: str, count: int) -> None:
        """Number of entries of the campaign, for progress display while the export runs."""
        self.collection.update_one({"_id": export_id}, {"$set": {"preliminaryCount": count}})

    def set_progress(self, export_id: str, *, stage: str, done: int, total: int | None) -> None:
        """How far a running export is (SPEC §4 `progress`): `done` of the stage's `total` (rows,
        or files while uploading). A total that `done` has passed was no bound: it becomes null."""
        if total is not None and done > total:
            total = None
        self.collection.update_one(
            {"_id": export_id, "status": TRIGGERED},
            {"$set": {"progress": {"stage": stage, "rows": done, "total": total}}},
        )

    def mark_finished(
        self,
        export_id: str,
        *,
        key: str | list[str] | None,
        count: int,
        meta: dict[str, Any],
        window: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """TRIGGERED → FINISHED with the file(s) (none for an empty `skipEmpty` run) and, for an
        incremental or `since` export, the `window` it covered (SPEC §12)."""
        now = utcnow()
        fields: dict[str, Any] = {
            "status": FINISHED,
            "key": key,
            "count": count,
            "meta": meta,
            "date.finished": now,
            "progress": {"stage": "finished", "rows": count, "total": count},
        }
        if window is not None:
            fields["window"] = window
        while True:
            # The destinations as they are in this very update: a duplicate request may add some
            # (add_destinations) until the record ends; one added meanwhile fails the match, so read again.
            current = self.get(export_id)
            destinations = (current or {}).get("destinations")
            push: dict[str, Any] = {OUTBOX_FIELD: outbox_entry(FINISHED, now)}
            if destinations and key and meta.get("skipped") != "empty":
                entries = [{"destinationId": d, "at": now} for d in destinations]
                push[DELIVERY_OUTBOX_FIELD] = {"$each": entries}
            update = {"$set": fields, "$unset": {"active": ""}, "$push": push}
            try:
                return self._transition(export_id, (TRIGGERED,), update, match={"destinations": destinations})
            except IllegalTransition:
                now_destinations = (self.get(export_id) or {}).get("destinations")
                if current is None or current.get("status") != TRIGGERED or now_destinations == destinations:
                    raise

    def add_destinations(self, export_id: str, destinations: tuple[str, ...]) -> dict[str, Any] | None:
        """A duplicate request's destinations (SPEC §13) join its PENDING/TRIGGERED record; None once it ended."""
        return self.collection.find_one_and_update(
            {"_id": export_id, "status": {"$in": list(ACTIVE)}},
            {"$addToSet": {"destinations": {"$each": list(destinations)}}},
            return_document=ReturnDocument.AFTER,
        )

    def mark_failed(
        self, export_id: str, *, message: str, payload: str = "", run_id: str | None = None
    ) -> dict[str, Any]:
        """TRIGGERED → FAILED; also PENDING → FAILED when its run died before it could start.

        Given `run_id` (the run that failed), only while the record is still that run's: late word
        of an old run (a sensor's tick after a re-execution started) must not fail the re-run.
        """
        now = utcnow()
        return self._transition(
            export_id,
            (PENDING, TRIGGERED),
            {
                "$set": {"status": FAILED, "error": {"message": message, "payload": payload}, "date.failed": now},
                "$unset": {"active": ""},
                "$push": {OUTBOX_FIELD: outbox_entry(FAILED, now)},
            },
            run_id,
        )

    def mark_expired(self, export_id: str, *, message: str, run_id: str | None = None) -> dict[str, Any]:
        """TRIGGERED → EXPIRED; `run_id` as in `mark_failed`."""
        now = utcnow()
        return self._transition(
            export_id,
            (TRIGGERED,),
            {
                "$set": {"status": EXPIRED, "error": {"message": message, "payload": ""}, "date.expired": now},
                "$unset": {"active": ""},
                "$push": {OUTBOX_FIELD: outbox_entry(EXPIRED, now)},
            },
            run_id,
        )

    # -- CCPA deletion (SPEC §7; the flow is in export_core/ccpa.py) ----------------------------
    # Orthogonal to the status: `deletion.status` goes pending → complete (or failed → retried);
    # `date.deleted` and `deletedBy` are set once every object of the export is gone.

    def get_many(self, export_ids: list[str]) -> list[dict[str, Any]]:
        return list(self.collection.find({"_id": {"$in": export_ids}})) if export_ids else []

    def unfinished_deletions(self) -> list[dict[str, Any]]:
        """Records whose deletion was started or failed but never completed."""
        return list(self.collection.find({"deletion.status": {"$in": ["pending", "failed"]}}))

    def begin_deletion(
        self, export_ids: list[str], *, by: str, audit_id: str, source: str, reason: str | None = None
    ) -> None:
        """Claim records for deletion before any object goes: from here on no download link is offered."""
        if export_ids:
            fields = {"status": "pending", "requestedBy": by, "auditId": audit_id, "source": source}
            if reason is not None:
                fields["reason"] = reason
            self.collection.update_many(
                {"_id": {"$in": export_ids}},
                {"$set": {f"deletion.{k}": v for k, v in fields.items()}, "$unset": {"deletion.error": ""}},
            )

    def mark_deleted(self, export_id: str, *, by: str, keys_deleted: list[str], audit_id: str) -> None:
        """Every object of the export is gone: `date.deleted`, who asked, and which keys went."""
        self.collection.update_one(
            {"_id": export_id},
            {
                "$set": {
                    "date.deleted": utcnow(),
                    "deletedBy": by,
                    "deletion.status": "complete",
                    "deletion.auditId": audit_id,
                },
                "$unset": {"deletion.error": ""},
                "$addToSet": {"deletion.keysDeleted": {"$each": keys_deleted}},
            },
        )

    def mark_deletion_failed(self, export_id: str, *, error: str, keys_deleted: list[str]) -> None:
        """Some objects may remain: say so, and which keys did go; a retry picks the record up again."""
        self.collection.update_one(
            {"_id": export_id},
            {
                "$set": {"deletion.status": "failed", "deletion.error": error},
                "$addToSet": {"deletion.keysDeleted": {"$each": keys_deleted}},
            },
        )
