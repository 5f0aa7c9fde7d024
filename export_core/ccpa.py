"""CCPA deletion (SPEC §7): delete every export file that contains a user — exactly, audited, resumable.

Dagster-free: the API calls `CcpaDeletion.delete_user`, the export job's finish step calls
`enforce_on_finish`. Collections besides `exports`:

- `export_members` (export_core/membership.py): which users each export's files contain, written
  while the files are written, so "which exports contain user X" is one index lookup.
- `ccpa_tombstones`: one document per user who asked, `{_id: userId, date: {first, last}}`.
  It is written *before* the lookup, and an export run checks it *after* its record turned
  FINISHED. Whatever the interleaving, either the request sees the export FINISHED and
  deletes it, or the export sees the tombstone and deletes itself: no file escapes.
- `ccpa_audit`: one entry per request (and per deletion an export run does on its own):
  who asked, when, for which user, which exports and keys went, what was skipped or failed.

Each deleted export lists `deliveredTo`: the destinations its files had been delivered to (SPEC §13, kept on
the record by the delivery sensor), so compliance knows which partners hold a copy; the service deletes
nothing on a partner's side.

A record's deletion is orthogonal to its status: `deletion.status` goes pending → complete
(or failed, until a retry completes it); `date.deleted` and `deletedBy` are set once every
object of the export is gone. The user's id is never written to the export record (campaign
admins read those); only the audit and the tombstone hold it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from export_core.export_types import EXPORT_TYPES
from export_core.keys import export_key
from export_core.membership import MembershipStore
from export_core.records import ACTIVE, DELIVERED_TO_FIELD, EXPIRED, FAILED, ExportStore, utcnow
from export_core.storage import S3DeleteError, delete_objects, list_keys
from export_core.views import to_json

logger = logging.getLogger("export_pipelines.ccpa")

# Business policy (SPEC §7): these files are kept even when they contain the user.
EXEMPT_TYPES = frozenset({"verifiedEntries", "scoring", "autoReminderEmail"})

# An export created up to this long *after* a request still checks it: the API replica that
# stamped the record and the one that stamped the tombstone may disagree on the time. Deleting
# such an export is still exact — it is only deleted when its files contain the user.
CLOCK_SKEW = timedelta(minutes=5)

TOMBSTONES = "ccpa_tombstones"
AUDIT = "ccpa_audit"
NOT_ATTEMPTED = "Not attempted, because an earlier deletion in this request failed; the next request retries."


class CcpaDeletionIncomplete(Exception):
    """Some exports could not be deleted; `summary` says which were and which were not."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class _Target:
    """One export to delete and where its objects are."""

    record: dict[str, Any]
    bucket: str
    keys: list[str]


def ensure_indexes(db: Database) -> None:
    """Idempotent; the API's lifespan calls it (after ExportStore.ensure_indexes)."""
    MembershipStore(db).ensure_indexes()
    db[TOMBSTONES].create_index([("date.last", ASCENDING)], name="by_last_request")
    db[AUDIT].create_index([("userId", ASCENDING), ("date.requested", DESCENDING)], name="by_user")
    db[AUDIT].create_index([("exports.id", ASCENDING)], name="by_export")


def _item(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": str(record["_id"]),
        "exportType": record.get("exportType"),
        "campaignId": record.get("campaignId"),
        "status": record.get("status"),
        **extra,
    }


def _block(items: list[dict[str, Any]]) -> dict[str, Any]:
    by_type = Counter(str(i["exportType"]) for i in items)
    return {"total": len(items), "byType": dict(sorted(by_type.items())), "exports": items}


def _deletion_complete(record: dict[str, Any]) -> bool:
    deletion = record.get("deletion") or {}
    return bool((record.get("date") or {}).get("deleted")) and deletion.get("status", "complete") == "complete"


STORAGE_REFUSED = "The file storage refused to delete this export's files; the next request for this user retries."
STORAGE_UNREACHABLE = "The file storage could not be reached; the next request for this user retries."
LOCATION_UNKNOWN = "Where this export's files are stored is not known, so they could not be deleted."


def _public_error(exc: BaseException) -> str:
    """One plain sentence (it reaches the HTTP body): no hosts, URLs, library names or traces.

    The S3 error code and the exception itself go to the log only.
    """
    cause = exc.__cause__ if isinstance(exc, S3DeleteError) and exc.__cause__ is not None else exc
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if hasattr(cause, "response") else None
    return STORAGE_REFUSED if code else STORAGE_UNREACHABLE


class CcpaDeletion:
    """Deletes the export files that contain a user; one instance per request is cheap."""

    def __init__(self, db: Database, s3: Any, buckets: Mapping[str, str]) -> None:
        self.db, self.s3, self.buckets = db, s3, buckets
        self.store = ExportStore(db)
        self.members = MembershipStore(db)
        self.tombstones = db[TOMBSTONES]
        self.audit = db[AUDIT]

    # -- where an export's objects are ------------------------------------------------------

    def _target(self, record: dict[str, Any]) -> _Target:
        """Bucket and every key of the export; for an attempt that never finished, what it left behind."""
        export_type = EXPORT_TYPES.get(str(record.get("exportType")))
        meta = record.get("meta") or {}
        bucket = meta.get("bucket") or (self.buckets[export_type.bucket] if export_type else None)
        if not bucket:
            raise ValueError(LOCATION_UNKNOWN)
        key = record.get("key")
        keys = [str(k) for k in key] if isinstance(key, list) else [str(key)] if key else []
        keys += [str(o["key"]) for o in meta.get("objects") or [] if o.get("key")]
        if record.get("status") in (FAILED, EXPIRED) or not keys:
            # Uploaded but never recorded (the finish step failed): the export's own key prefix.
            prefix = export_key(str(record.get("exportType")), str(record.get("campaignId")), str(record["_id"]), "")
            keys += list_keys(self.s3, bucket=bucket, prefix=prefix)
        return _Target(record, bucket, list(dict.fromkeys(keys)))

    def delete_targets(
        self, targets: list[_Target], *, by: str, audit_id: str
    ) -> tuple[list[dict], list[dict], str | None]:
        """Delete target by target; stop at the first failure. Returns (deleted, failed, public error).

        Also used by retention (export_core/retention.py): the marking of records is the same.
        """
        deleted: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        error: str | None = None
        for target in targets:
            export_id = str(target.record["_id"])
            if error is not None:
                self.store.mark_deletion_failed(export_id, error=NOT_ATTEMPTED, keys_deleted=[])
                failed.append(_item(target.record, bucket=target.bucket, keysDeleted=[], error=NOT_ATTEMPTED))
                continue
            try:
                gone = delete_objects(self.s3, bucket=target.bucket, keys=target.keys)
            except Exception as exc:
                partial = exc.deleted if isinstance(exc, S3DeleteError) else []
                error = _public_error(exc)
                logger.error("CCPA deletion %s: export %s failed: %s", audit_id, export_id, exc)
                self.store.mark_deletion_failed(export_id, error=error, keys_deleted=partial)
                failed.append(_item(target.record, bucket=target.bucket, keysDeleted=partial, error=error))
                continue
            self.store.mark_deleted(export_id, by=by, keys_deleted=gone, audit_id=audit_id)
            delivered_to = to_json(target.record.get(DELIVERED_TO_FIELD) or [])
            deleted.append(_item(target.record, bucket=target.bucket, keys=gone, deliveredTo=delivered_to))
        return deleted, failed, error

    def targets(self, records: list[dict[str, Any]], failed: list[dict[str, Any]]) -> list[_Target]:
        """Where each record's objects are; records whose objects cannot be found are marked failed (in `failed`)."""
        targets = []
        for record in records:
            try:
                targets.append(self._target(record))
            except Exception as exc:  # e.g. listing a failed attempt's prefix while S3 is down
                error = _public_error(exc) if not isinstance(exc, ValueError) else LOCATION_UNKNOWN
                logger.error("CCPA deletion: export %s: locating its files failed: %r", record["_id"], exc)
                self.store.mark_deletion_failed(str(record["_id"]), error=error, keys_deleted=[])
                failed.append(_item(record, keysDeleted=[], error=error))
        return targets

    # -- the API's request --------------------------------------------------------------------

    def delete_user(self, user_id: str, *, requested_by: str) -> dict[str, Any]:
        """Delete every non-exempt export whose files contain `user_id`; returns the summary.

        Raises CcpaDeletionIncomplete (summary attached) when S3 failed midway; the records
        and the audit entry then say what was and was not deleted, and calling again finishes.
        """
        now, audit_id = utcnow(), uuid.uuid4().hex
        self.tombstones.update_one(
            {"_id": user_id},
            {
                "$set": {"date.last": now, "lastRequestedBy": requested_by, "lastAuditId": audit_id},
                "$setOnInsert": {"date.first": now},
                "$inc": {"requests": 1},
            },
            upsert=True,
        )
        export_ids = sorted(self.members.exports_containing(user_id))
        records = sorted(self.store.get_many(export_ids), key=lambda r: str(r["_id"]))
        skipped, already, in_flight, to_delete = [], [], [], []
        for record in records:
            if record.get("exportType") in EXEMPT_TYPES:
                skipped.append(_item(record, reason="exempt"))
            elif record.get("status") in ACTIVE:
                in_flight.append(_item(record))  # its run checks the tombstone when it finishes
            elif _deletion_complete(record):
                already.append(_item(record, deletedAt=record["date"]["deleted"]))
            else:
                to_delete.append(record)
        # Deletions an earlier request (or an export run) started but could not finish.
        mine = set(export_ids)
        resumable = [r for r in self.store.unfinished_deletions() if str(r["_id"]) not in mine]
        resumable.sort(key=lambda r: str(r["_id"]))

        self.audit.insert_one(
            {
                "_id": audit_id,
                "source": "api",
                "userId": user_id,
                "requestedBy": requested_by,
                "status": "running",
                "date": {"requested": now},
                "planned": [_item(r) for r in to_delete + resumable],
                "skipped": skipped,
                "alreadyDeleted": already,
                "inFlight": in_flight,
            }
        )
        self.store.begin_deletion([str(r["_id"]) for r in to_delete], by=requested_by, audit_id=audit_id, source="api")
        failed: list[dict[str, Any]] = []
        targets = self.targets(to_delete, failed)
        deleted, failed_now, error = self.delete_targets(targets, by=requested_by, audit_id=audit_id)
        failed += failed_now
        resumed: list[dict[str, Any]] = []
        if error is None and not failed and resumable:
            for record in resumable:  # keep their own requester and audit trail
                deletion = record.get("deletion") or {}
                by = str(deletion.get("requestedBy") or requested_by)
                done, failed_now, error = self.delete_targets(
                    self.targets([record], failed), by=by, audit_id=str(deletion.get("auditId") or audit_id)
                )
                resumed += done
                failed += failed_now
                if error is not None:
                    break

        summary: dict[str, Any] = {
            "userId": user_id,
            "requestedBy": requested_by,
            "auditId": audit_id,
            "requestedAt": now,
            "complete": not failed,
            "message": _message(deleted, skipped, already, in_flight, failed),
            "deleted": _block(deleted),
            "skipped": _block(skipped),
            "alreadyDeleted": _block(already),
            "inFlight": _block(in_flight),
            "failed": _block(failed),
            "resumed": _block(resumed),
        }
        finished_at = utcnow()
        self.audit.update_one(
            {"_id": audit_id},
            {
                "$set": {
                    "status": "completed" if not failed else "failed",
                    "date.completed" if not failed else "date.failed": finished_at,
                    "exports": deleted,  # what went, with bucket and keys
                    "failed": failed,
                    "resumed": resumed,
                }
            },
        )
        logger.info(
            "CCPA deletion %s: %d deleted, %d skipped, %d already deleted, %d in flight, %d failed, %d resumed",
            audit_id, len(deleted), len(skipped), len(already), len(in_flight), len(failed), len(resumed),
        )  # fmt: skip
        if failed:
            total = len(deleted) + len(failed)
            raise CcpaDeletionIncomplete(
                f"CCPA deletion incomplete: deleted {len(deleted)} of {total} export(s); retry the request to finish.",
                summary,
            )
        return summary

    # -- the export run's finish step ----------------------------------------------------------

    def enforce_on_finish(self, export_id: str) -> dict[str, Any] | None:
        """Called right after the export turned FINISHED: delete it again at once if it must not exist.

        That is when a CCPA request for one of its users arrived after it was created (it was
        queued or running, so the request could not see its file), or when the record was
        deleted already (a re-run of a deleted export). Returns the audit entry, or None.
        Never raises for S3: a failure is left on the record (no download link, `deletion.status`
        failed) and the next CCPA request of anyone finishes it.
        """
        record = self.store.get(export_id)
        if record is None or record.get("exportType") in EXEMPT_TYPES:
            return None
        since = record["date"]["created"] - CLOCK_SKEW
        tombstones = {
            str(t["_id"]): t
            for t in self.tombstones.find({"date.last": {"$gte": since}}, {"lastRequestedBy": 1, "lastAuditId": 1})
        }
        hits = sorted(self.members.members_among(export_id, tombstones)) if tombstones else []
        earlier = record.get("deletion") or {}
        if not hits and not earlier:
            return None
        requesters = sorted({str(tombstones[u].get("lastRequestedBy")) for u in hits}) or [
            str(earlier.get("requestedBy") or "unknown")
        ]
        now, audit_id = utcnow(), uuid.uuid4().hex
        entry: dict[str, Any] = {
            "_id": audit_id,
            "source": "export-finish",
            # The requests this export answers (their own audit entries list it as in flight or not at all).
            "userIds": hits,
            "requests": [str(tombstones[u].get("lastAuditId")) for u in hits],
            "requestedBy": ", ".join(requesters),
            "reason": "a CCPA request arrived while the export was queued or running"
            if hits
            else "the export had been deleted before this run wrote it again",
            "status": "running",
            "date": {"requested": now},
            "planned": [_item(record)],
        }
        self.audit.insert_one(entry)
        self.store.begin_deletion([export_id], by=entry["requestedBy"], audit_id=audit_id, source="export-finish")
        failed: list[dict[str, Any]] = []
        deleted, failed_now, _ = self.delete_targets(
            self.targets([record], failed), by=entry["requestedBy"], audit_id=audit_id
        )
        failed += failed_now
        status = "completed" if not failed else "failed"
        update = {"status": status, f"date.{status}": utcnow(), "exports": deleted, "failed": failed}
        self.audit.update_one({"_id": audit_id}, {"$set": update})
        if failed:
            logger.error("CCPA: export %s must be deleted but S3 failed; the next CCPA request retries", export_id)
        return {**entry, **update}


def _message(
    deleted: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    already: list[dict[str, Any]],
    in_flight: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> str:
    if not (deleted or skipped or already or in_flight or failed):
        return "No export contains this user."
    parts = []
    if deleted:
        parts.append(f"Deleted {len(deleted)} export(s).")
    elif already:
        parts.append(f"Nothing more to delete: {len(already)} export(s) containing this user were already deleted.")
    else:
        parts.append("Nothing deleted.")
    if deleted and already:
        parts.append(f"{len(already)} export(s) were already deleted.")
    if failed:
        parts.append(f"{len(failed)} export(s) could not be deleted.")
    if skipped:
        parts.append(f"Skipped {len(skipped)} exempt export(s).")
    if in_flight:
        parts.append(f"{len(in_flight)} export(s) still running will delete themselves when they finish.")
    return " ".join(parts)


def enforce_on_finish(db: Database, s3: Any, buckets: Mapping[str, str], export_id: str, log: Any = None) -> None:
    """For the export job's finish step (see CcpaDeletion.enforce_on_finish)."""
    entry = CcpaDeletion(db, s3, buckets).enforce_on_finish(export_id)
    if entry is not None and log is not None:
        outcome = "deleted" if entry["status"] == "completed" else "could NOT be deleted (retried by the next request)"
        log.info(f"CCPA: export {export_id} {outcome} right after finishing: {entry['reason']}")
