"""Destination delivery on the Dagster side (SPEC §13): the destinations channel of the delivery sensor (deliveries.py).

New deliveries: FINISHED pushes `{destinationId, at}` per destination of the record onto its `deliver` list in
the update that ends the export (export_core/records.py). For each entry one delivery is stored (upserted under
a deterministic id: the export, the destination, the end), then the entry is pulled; a crash in between stores
the same delivery again next time: no duplicate, no loss. The destination's type and name are kept on the
delivery, so a CCPA deletion can still say where a file went after the destination was removed.

Sending, never inside the export's run nor in its queue (a slow partner never holds the one-at-a-time export
queue): the sensor claims a due delivery (a numbered claim, LAUNCH_LEASE) and requests a run of
`destination_delivery_job` for it (tag DELIVERY_TAG: dagster.yaml runs RUNS_AT_ONCE at a time). The run takes
the lease for its attempt (`attempt_seconds` for the export's size, at most DELIVERY_ATTEMPT_MAX_SECONDS, plus
LEASE_MARGIN), reads the export record, the destination and its secrets (decrypted with SECRETS_KEY), and
export_core/destination_delivery.py sends the file(s), its transfers stopped at that deadline; the attempt is
recorded only under the run's claim. A run whose worker died leaves its lease to end (the sensor ends the
Dagster run, `end_lost_runs`) and is launched again: one attempt at a time, one end.
A failure that may pass (a server down, a timeout) is retried with the queue's growing delays; one that
cannot (a host key that is not the pinned one, a refused login, a missing folder, a removed destination or a
deleted export) ends the delivery at once with its reason. Each delivery that ends is announced once
(`DestinationSender.announce`, after its end is recorded): webhook event `export.delivered` or
`export.delivery_failed` onto the export's `notify` outbox (SPEC §11) and, when delivered, an entry of the
record's `deliveredTo` (a CCPA deletion lists it). Log lines name ids, hosts
and folders, never a password or a key.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    in_process_executor,
    job,
    op,
)
from pymongo.database import Database

from export_core.clients import s3_client
from export_core.destination_delivery import Reach, deliver
from export_core.destination_store import SECRETS_FIELD, DestinationStore, delivery_view, sent_files
from export_core.destinations import Delivered, PermanentDeliveryError, RetryableDeliveryError
from export_core.export_types import EXPORT_TYPES
from export_core.outbox import DELIVERED, deterministic_id
from export_core.records import DELIVERED_TO_FIELD, DELIVERY_OUTBOX_FIELD, OUTBOX_FIELD, ExportStore, utcnow
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.vocabulary import DELIVERY_EVENTS
from export_core.webhooks import EPOCH
from export_pipelines.deliveries import (
    STORE_BATCH,
    Channel,
    Clock,
    Log,
    TickReport,
    attempt_claimed,
    build_delivery_sensor,
)
from export_pipelines.workers import RunWorker, record_worker

logger = logging.getLogger(__name__)

JOB_NAME = "destination_delivery_job"
DELIVERY_TAG = "export-service/delivery"  # dagster.yaml runs RUNS_AT_ONCE runs with this tag at a time
DELIVERY_ID_TAG = "export-service/delivery-id"
EXPORT_ID_TAG = "export-service/export-id"  # not dagster/partition: a delivery run is no export's run
RUNS_AT_ONCE = 2  # delivery runs queued or in progress, as dagster.yaml's limit (each downloads its file first)
IN_FLIGHT = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
]  # fmt: skip
LAUNCH_LEASE = timedelta(minutes=6)  # claimed to launched and started (Kubernetes: a 5-minute start timeout)
MIN_ATTEMPT_SECONDS = 60.0  # an attempt's transfers may take this plus the file's size at the rate below
MIN_BYTES_PER_SECOND = 256 * 1024
# Past its deadline a transfer stops at its next block, or when the request under way times out (30 s), and
# removes its partial file (one more request): the lease ends only after that, so no second attempt starts
# while one still writes.
LEASE_MARGIN = timedelta(seconds=60)
DESTINATION_REMOVED = "The destination was removed before this export was delivered to it."
EXPORT_DELETED = "The export's files were deleted before they could be delivered."
UNEXPECTED = "The delivery failed unexpectedly; it is tried again later."
DELIVERED_EVENT, FAILED_EVENT = DELIVERY_EVENTS


@dataclass(frozen=True)
class Outcome:
    """One attempt: the files sent, or the sentence that says why not; `final` when trying again cannot help."""

    files: tuple[Delivered, ...] = ()
    error: str | None = None
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None

    def attempt_fields(self) -> dict[str, Any]:
        sent = [{"remotePath": f.remote_path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files]
        return {"error": self.error, "files": sent}

    def describe(self) -> str:
        if self.error is None:
            return f"delivered {len(self.files)} file(s)"
        return self.error if self.final else f"this error: {self.error}"


@dataclass(frozen=True)
class Target:
    """What sending one delivery needs, read as it is claimed."""

    record: dict[str, Any] | None
    destination: dict[str, Any] | None
    secrets: dict[str, str]


def delivery_id(export_id: str, destination_id: str, at: datetime) -> str:
    """The same for the same (export, destination, end), whoever stores it, whenever."""
    return deterministic_id("dlv_", export_id, destination_id, str(int(at.timestamp() * 1000)))


def store_deliveries(db: Database, *, clock: Clock = utcnow, limit: int = STORE_BATCH) -> int:
    """Turn the `deliver` outbox entries of FINISHED exports into stored deliveries; how many were stored."""
    store, exports = DestinationStore(db), ExportStore(db).collection
    stored = 0
    for record in exports.find({f"{DELIVERY_OUTBOX_FIELD}.at": {"$gt": EPOCH}}).limit(limit):
        for entry in list(record.get(DELIVERY_OUTBOX_FIELD) or []):
            destination_id, at = entry.get("destinationId"), entry.get("at")
            if isinstance(destination_id, str) and isinstance(at, datetime):
                destination = store.destinations.find_one(
                    {"_id": destination_id, "campaignId": record.get("campaignId")}, {SECRETS_FIELD: 0}
                ) or {}  # fmt: skip
                fields = {
                    "exportId": record["_id"],
                    "campaignId": record.get("campaignId"),
                    "destinationId": destination_id,
                    "destinationType": destination.get("type"),
                    "destinationName": destination.get("name"),
                }
                store.deliveries_queue.store(delivery_id(str(record["_id"]), destination_id, at), fields, clock())
                stored += 1
            # Only now, and only this entry.
            exports.update_one({"_id": record["_id"]}, {"$pull": {DELIVERY_OUTBOX_FIELD: entry}})
    return stored


class DestinationSender:
    """Reads what a delivery needs, sends it, and announces its end; one per channel."""

    def __init__(self, db: Database, settings: Settings, secret_box: SecretBox) -> None:
        self.store, self.exports = DestinationStore(db), ExportStore(db)
        self.settings, self.secret_box = settings, secret_box
        self.reach = Reach.of(settings)
        self._s3: Any = None

    def target(self, delivery: dict[str, Any]) -> Target:
        """The export and the destination (None when gone) and the decrypted secrets (UnreadableSecret: the
        delivery waits for SECRETS_KEY to have its key back, unattempted)."""
        record = self.exports.get(str(delivery["exportId"]))
        destination = self.store.destinations.find_one(
            {"_id": delivery["destinationId"], "campaignId": delivery.get("campaignId")}, {SECRETS_FIELD: 0}
        )  # fmt: skip
        secrets = self.store.login_secrets(str(delivery["destinationId"]), self.secret_box) if destination else {}
        return Target(record, destination, secrets)

    async def send(self, delivery: dict[str, Any], target: Target, timeout: float) -> Outcome:
        return await asyncio.to_thread(self.attempt, delivery, target, timeout)

    def attempt(self, delivery: dict[str, Any], target: Target, timeout: float) -> Outcome:
        """One attempt, its transfers stopped after `timeout` seconds."""
        record, destination = target.record, target.destination
        if destination is None:
            return Outcome(error=DESTINATION_REMOVED, final=True)
        if record is None or record.get("deletion") or (record.get("date") or {}).get("deleted"):
            return Outcome(error=EXPORT_DELETED, final=True)
        try:
            files = deliver(
                record, destination, target.secrets, self.reach,
                s3=self._our_s3(), bucket=self._bucket(record), deadline=time.monotonic() + timeout,
                partial_key=str(delivery["_id"]).removeprefix("dlv_")[:16],
            )  # fmt: skip
        except PermanentDeliveryError as exc:
            return Outcome(error=str(exc), final=True)
        except RetryableDeliveryError as exc:
            return Outcome(error=str(exc))
        except ValueError as exc:  # a stored hostKey that no longer parses, a template gone wrong
            return Outcome(error=str(exc), final=True)
        except Exception:
            logger.exception("destination delivery to %s failed unexpectedly", destination.get("_id"))
            return Outcome(error=UNEXPECTED)
        logger.info("delivered export %s to destination %s: %d file(s)", record["_id"], destination["_id"], len(files))
        return Outcome(files=tuple(files))

    def _our_s3(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self.settings)
        return self._s3

    def _bucket(self, record: dict[str, Any]) -> str:
        """The bucket the export's objects are in: its record's, or (records from before meta.bucket) its type's."""
        bucket = (record.get("meta") or {}).get("bucket")
        if bucket:
            return str(bucket)
        return self.settings.bucket_for(EXPORT_TYPES[str(record.get("exportType"))].bucket)

    def announce(self, ended: dict[str, Any]) -> None:
        """Push the webhook event of an ended delivery onto the export's `notify` outbox and, when delivered, add
        it to `deliveredTo`, in one update that finds nothing to do when this end is there already: both carry
        the end's time (its last attempt's), so announcing it again (a crash before it was marked announced)
        changes nothing, and the webhook sensor would store the same `webhook-id` anyway."""
        delivered = ended["status"] == DELIVERED
        at = ended.get("lastAttemptAt") or utcnow()
        destination_id = ended["destinationId"]
        shown = {k: v for k, v in delivery_view(ended).items() if k not in ("attempts", "createdAt", "nextAttemptAt")}
        push: dict[str, Any] = {
            OUTBOX_FIELD: {"event": DELIVERED_EVENT if delivered else FAILED_EVENT, "at": at, "delivery": shown}
        }
        if delivered:
            push[DELIVERED_TO_FIELD] = {
                "destinationId": destination_id,
                "type": ended.get("destinationType"),
                "name": ended.get("destinationName"),
                "remotePaths": [f["remotePath"] for f in sent_files(ended)],
                "deliveredAt": at,
            }
        this_end = [
            {DELIVERED_TO_FIELD: {"$elemMatch": {"destinationId": destination_id, "deliveredAt": at}}},
            {OUTBOX_FIELD: {"$elemMatch": {"delivery.destinationId": destination_id, "at": at}}},
        ]
        self.exports.collection.update_one({"_id": ended["exportId"], "$nor": this_end}, {"$push": push})


def destination_channel(db: Database, *, settings: Settings, secret_box: SecretBox) -> Channel[Target]:
    """Destination deliveries as the delivery sensor stores and launches them and their runs send them."""
    sender, store = DestinationSender(db, settings, secret_box), DestinationStore(db)
    return Channel(
        name="destination",
        queue=store.deliveries_queue,
        ensure_indexes=store.ensure_indexes,
        store_new=lambda clock, limit: store_deliveries(db, clock=clock, limit=limit),
        target=sender.target,
        send=sender.send,
        label=lambda d: f"export {d.get('exportId')}, destination {d.get('destinationId')}",
        attempt_timeout=MIN_ATTEMPT_SECONDS,
        announce=sender.announce,
    )


# -- an attempt is a run of its own ---------------------------------------------------------------------


def attempt_seconds(record: dict[str, Any] | None, max_seconds: float) -> float:
    """How long one attempt may transfer: a minute plus the export's bytes at MIN_BYTES_PER_SECOND, at most
    `max_seconds` (DELIVERY_ATTEMPT_MAX_SECONDS)."""
    objects = ((record or {}).get("meta") or {}).get("objects") or []
    size = sum(int(o.get("bytes") or 0) for o in objects)
    return min(MIN_ATTEMPT_SECONDS + size / MIN_BYTES_PER_SECOND, float(max_seconds))


def run_attempt(
    db: Database,
    delivery_id: str,
    claim: int,
    *,
    settings: Settings,
    secret_box: SecretBox,
    clock: Clock = utcnow,
    log: Log,
) -> dict[str, Any] | None:
    """What a delivery run does: take the lease of claim `claim` for this attempt (its transfers' time plus
    LEASE_MARGIN), then attempt and record it. Nothing when a later claim took the delivery over (this run
    waited past its LAUNCH_LEASE) or it ended meanwhile. Returns what was recorded."""
    channel = destination_channel(db, settings=settings, secret_box=secret_box)
    delivery = channel.queue.collection.find_one({"_id": delivery_id}) or {}
    seconds = attempt_seconds(ExportStore(db).get(str(delivery.get("exportId"))), settings.delivery_attempt_max_seconds)
    held = channel.queue.extend(delivery_id, claim, clock() + timedelta(seconds=seconds) + LEASE_MARGIN)
    if held is None:
        log(f"destination delivery {delivery_id} not attempted by claim {claim}: taken over or ended meanwhile")
        return None
    log(f"destination delivery {delivery_id} claim {claim}: {seconds:.0f} s to transfer, leased until "
        f"{held['nextAttemptAt']}")  # fmt: skip
    return attempt_claimed(channel, held, claim, seconds, clock=clock, log=log)


def run_config(delivery_id: str, claim: int) -> dict[str, Any]:
    """A delivery run's config: which delivery, under which claim."""
    return {"ops": {"deliver_to_destination": {"config": {"delivery_id": delivery_id, "claim": claim}}}}


def build_destination_job(*, settings: Settings, secret_box: SecretBox, clock: Clock = utcnow) -> JobDefinition:
    """The job of one delivery attempt: tagged DELIVERY_TAG (dagster.yaml runs RUNS_AT_ONCE at a time), never
    the export queue's tag, so a slow partner never holds or waits for the one-at-a-time export queue."""

    @op(
        name="deliver_to_destination",
        config_schema={"delivery_id": str, "claim": int},
        required_resource_keys={"mongo"},
    )
    def deliver_to_destination(context: OpExecutionContext) -> None:
        record_worker(context.instance, context.run_id)  # a worker killed mid-transfer: the sensor ends the run
        config, mongo = context.op_config, context.resources.mongo
        recorded = run_attempt(
            mongo.db(), str(config["delivery_id"]), int(config["claim"]),
            settings=settings, secret_box=secret_box, clock=clock, log=context.log.info,
        )  # fmt: skip
        context.log.info(f"recorded: {recorded.get('status', 'pending') if recorded else 'nothing'}")

    @job(name=JOB_NAME, tags={DELIVERY_TAG: "destination"}, executor_def=in_process_executor)
    def destination_delivery_job() -> None:
        deliver_to_destination()

    return destination_delivery_job


def end_lost_runs(instance: DagsterInstance, log: Log) -> int:
    """End the delivery runs Dagster shows in progress whose worker on this machine is gone (workers.py), so
    they hold no DELIVERY_TAG slot; their delivery is due again when its lease ends. How many."""
    in_progress = RunsFilter(job_name=JOB_NAME, statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING])
    ended = 0
    for run in instance.get_runs(filters=in_progress):
        worker = RunWorker.of(run)
        if worker is not None and worker.on_this_machine() and worker.is_gone():
            message = f"The delivery run's worker (pid {worker.pid}) no longer exists; the delivery is tried again."
            instance.report_run_failed(run, message)
            log(f"destination delivery run {run.run_id}: {message}")
            ended += 1
    return ended


def launch_due(channel: Channel[Any], instance: DagsterInstance, clock: Clock, log: Log) -> TickReport:
    """Claim due deliveries for LAUNCH_LEASE, as many as RUNS_AT_ONCE leaves room for, and request one run
    each, its run_key the delivery and the claim's number (a claim lost with its run gets a new key)."""
    report = TickReport(channel.name)
    end_lost_runs(instance, log)
    busy = instance.get_runs_count(RunsFilter(job_name=JOB_NAME, statuses=IN_FLIGHT))
    now = clock()
    for delivery in channel.queue.due(now, max(RUNS_AT_ONCE - busy, 0)):
        if not channel.queue.claim(delivery, now, LAUNCH_LEASE):
            continue
        claim = channel.queue.claim_number(delivery)
        report.run_requests.append(
            RunRequest(
                run_key=f"{delivery['_id']}/{claim}",
                job_name=JOB_NAME,
                run_config=run_config(str(delivery["_id"]), claim),
                tags={DELIVERY_ID_TAG: str(delivery["_id"]), EXPORT_ID_TAG: str(delivery.get("exportId"))},
            )
        )
    return report


def build_destination_sensor(
    *, settings: Settings, secret_box: SecretBox, job: JobDefinition, clock: Clock = utcnow
) -> SensorDefinition:
    """The sensor; settings (WEBHOOK_ALLOW_PRIVATE, S3) and `secret_box` (SECRETS_KEY) are read once when the code
    location loads. Its ticks store, claim and launch; `job` (build_destination_job) sends."""
    return build_delivery_sensor(
        "destination_delivery_sensor",
        "Store a delivery for every destination a FINISHED export names, and launch a run for each due one that"
        " pushes it to the partner's SFTP server, S3 bucket or Marketing Cloud (SPEC §13).",
        lambda db: destination_channel(db, settings=settings, secret_box=secret_box),
        clock=clock,
        launch=launch_due,
        jobs=[job],
    )
