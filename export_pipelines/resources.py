"""Dagster resources: each external system behind the few operations an export needs of it.

`definitions.py` configures them from the environment (SPEC §8) with `EnvVar`, resolved when a
run starts and never shown in the UI; tests build them with their own servers' addresses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, Failure, InitResourceContext
from pydantic import PrivateAttr
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from export_core import json_logs
from export_core.clients import CommandCounter, bytes_received_from, new_s3_client
from export_core.plan import ExportPlan
from export_core.records import FINISHED, TRIGGERED, ExportStore
from export_core.storage import UploadedObject, delete_objects, list_keys, object_acl, upload_file
from export_pipelines.end_states import close_ended_runs, end_run_scratch, sweep_killed_run_scratch
from export_pipelines.exports.contract import ExportContext, PermanentExportError, Progress
from export_pipelines.stages import Workspace, context_of, resolve_plan, staged_plan
from export_pipelines.workers import record_worker

LOGICAL_BUCKETS = ("exportsS3", "scoringS3", "vfScoringS3", "sfmcS3")
SETUP_ATTEMPTS = 4  # like the ops' RetryPolicy: 1 + 3 retries


class MongoResource(ConfigurableResource):
    """The campaign data an export reads and the export records it moves along (one client per run)."""

    uri: str
    database: str = "verifiedfan"

    _client: Any = PrivateAttr(default=None)
    _commands: CommandCounter = PrivateAttr(default_factory=CommandCounter)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client = None

    def db(self) -> Database:
        if self._client is None:
            self._client = MongoClient(self.uri, tz_aware=True, event_listeners=[self._commands])
        return self._client[self.database]

    def usage(self) -> dict[str, int | None]:
        """What this process asked of the database so far: commands (round trips) and bytes received."""
        if self._client is None:
            return {}
        address = self._client.address
        received = bytes_received_from(address[1]) if address else None
        return {"dbRequests": self._commands.commands, "dbBytesReceived": received}

    def store(self) -> ExportStore:
        return ExportStore(self.db())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class S3Resource(ConfigurableResource):
    """The export buckets: upload (never a partial object at the key), download, list, delete."""

    endpoint_url: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    exports_bucket: str = "exports"
    scoring_bucket: str = "scoring"
    vf_scoring_bucket: str = "vf-scoring"
    sfmc_bucket: str = "sfmc"
    # S3_OBJECT_ACL: "per-type" sends each type's canned ACL; "none" sends none (buckets with ACLs disabled).
    object_acl: str = "per-type"
    sse: str | None = None  # S3_SSE: "aws:kms" or "AES256" on every upload
    sse_kms_key_id: str | None = None  # S3_SSE_KMS_KEY_ID, with aws:kms
    local_credentials: bool = False  # dummy credentials for a local endpoint (clients.local_s3_credentials)

    _client: Any = PrivateAttr(default=None)

    def client(self) -> Any:
        """The boto3 client (for the domain code that takes one, e.g. CCPA)."""
        if self._client is None:
            self._client = new_s3_client(self.endpoint_url, self.region, local_credentials=self.local_credentials)
        return self._client

    def bucket_for(self, logical: str) -> str:
        """A registry bucket name (exportsS3, scoringS3, vfScoringS3, sfmcS3) → the configured bucket."""
        return {
            "exportsS3": self.exports_bucket,
            "scoringS3": self.scoring_bucket,
            "vfScoringS3": self.vf_scoring_bucket,
            "sfmcS3": self.sfmc_bucket,
        }[logical]

    def upload(
        self, path: Path, *, bucket: str, key: str, acl: str, content_type: str, content_disposition: str
    ) -> UploadedObject:
        """Upload with the type's `acl` as S3_OBJECT_ACL allows, and the configured encryption."""
        return upload_file(
            self.client(),
            path,
            bucket=bucket,
            key=key,
            acl=object_acl(self.object_acl, acl),
            content_type=content_type,
            content_disposition=content_disposition,
            sse=self.sse,
            sse_kms_key_id=self.sse_kms_key_id,
        )

    def download(self, *, bucket: str, key: str, path: Path) -> None:
        self.client().download_file(bucket, key, str(path))

    def list_keys(self, *, bucket: str, prefix: str) -> list[str]:
        return list_keys(self.client(), bucket=bucket, prefix=prefix)

    def delete(self, *, bucket: str, keys: list[str]) -> list[str]:
        return delete_objects(self.client(), bucket=bucket, keys=keys)


class ExportFilesResource(ConfigurableResource):
    """Where export runs stage their files, and the knobs of how they write them (SPEC §8)."""

    data_dir: str
    max_rows_per_exported_file: int = 100_000
    sfmc_config: str | None = None  # SFMC tables override: a JSON file path or inline JSON
    timeout_millis: int = 3_600_000
    export_retention_days: int | None = None  # EXPORT_RETENTION_DAYS, for the retention job; None: off

    def workspace(self, s3: S3Resource) -> Workspace:
        return Workspace(
            data_dir=Path(self.data_dir),
            buckets={name: s3.bucket_for(name) for name in LOGICAL_BUCKETS},
            max_rows_per_file=self.max_rows_per_exported_file,
            sfmc_config=self.sfmc_config,
            timeout_millis=self.timeout_millis,
        )


class ExportRunResource(ConfigurableResource):
    """The export this run works on (its partition key), moved to TRIGGERED once, when the run starts.

    Dagster sets a resource up once per run, before its first step: so a first run, a
    re-execution from failure (FAILED/EXPIRED → TRIGGERED, SPEC §4) and a backfill all mark
    the record exactly once, whichever step they start at, and no op decides it again. First
    it tags the run with this worker process (export_pipelines/workers.py), then records the
    outcome of exports whose runs ended before it (a timed-out run ends at once in Dagster's
    eyes, maybe before the failure sensor's tick): one export TRIGGERED at a time.
    """

    mongo: MongoResource
    s3: S3Resource
    files: ExportFilesResource
    retry_delay_seconds: float = 1.0  # first wait of the set-up's own retries (then doubled)

    _export_id: str | None = PrivateAttr(default=None)
    _run_id: str = PrivateAttr(default="")
    _plan: ExportPlan | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        if run is None or "dagster/partition" not in run.tags:
            return  # not an export run (e.g. a test building the resource alone)
        self._export_id, self._run_id = run.tags["dagster/partition"], run.run_id
        if context.instance is not None:
            # Before the record can say TRIGGERED: this process is the run's worker, so the
            # reconcile sensor can tell a worker that died with the machine from a live one.
            record_worker(context.instance, run.run_id)
        # No RetryPolicy covers a resource's set-up: connection hiccups are retried here.
        for attempt in range(SETUP_ATTEMPTS):
            try:
                return self._start(context)
            except ConnectionFailure as error:
                if attempt == SETUP_ATTEMPTS - 1:
                    raise
                if context.log is not None:
                    context.log.warning(f"the database was unavailable at the run's start, retrying: {error!r}")
                time.sleep(self.retry_delay_seconds * 2**attempt)

    def _start(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        assert run is not None and self._export_id is not None
        store = self.mongo.store()
        record = store.get(self._export_id)
        if record is None:
            raise Failure(f"export record {self._export_id} not found", allow_retries=False)
        json_logs.bind(request_id=record.get("requestId"), export_id=self._export_id)
        if record["status"] == FINISHED:
            raise Failure(
                f"export {self._export_id} is already FINISHED; only FAILED or EXPIRED exports are re-run",
                allow_retries=False,
            )
        claimed = "rerun" in record  # a re-run the API claimed (POST .../rerun): TRIGGERED before this run began
        if record["status"] != TRIGGERED or record.get("runId") != run.run_id or claimed:
            if context.instance is not None:  # the export before this one ended: its record first
                for closed in close_ended_runs(context.instance, store, starting=self._export_id):
                    if context.log is not None:
                        context.log.info(f"export {closed}: its run had ended, outcome recorded before this one")
            if record["status"] == TRIGGERED and claimed:  # this run owns it now; its runtime starts here
                store.start_claimed_rerun(self._export_id, run_id=run.run_id)
            elif record["status"] == TRIGGERED:  # re-executed while the old run was never recorded as ended
                store.attach_run(self._export_id, run.run_id)
            else:  # PENDING: first start; FAILED/EXPIRED: a re-run
                store.mark_triggered(self._export_id, run_id=run.run_id, preliminary_count=None)
            if context.log is not None:
                context.log.info(f"export {self._export_id} TRIGGERED by run {run.run_id}")

    @property
    def export_id(self) -> str:
        if self._export_id is None:
            raise Failure("this run has no export id (partition key)", allow_retries=False)
        return self._export_id

    def fresh_context(self, log: Any) -> ExportContext:
        """The context of a plan resolved afresh from the record and its campaign, for the run's
        first step; `keep` stages it. PermanentExportError when it cannot be planned."""
        record = self.mongo.store().get(self.export_id)
        if record is None:
            raise PermanentExportError(f"The export record {self.export_id[:100]!r} no longer exists.")
        workspace = self.files.workspace(self.s3)
        return self._context_of(resolve_plan(record, self.mongo.db(), workspace, run_id=self._run_id), log)

    def keep(self, export_plan: ExportPlan) -> None:
        """Stage the export's plan with its files: every later step, and a re-execution from failure, read it."""
        export_plan.save()
        self._plan = export_plan

    def context(self, log: Any) -> ExportContext:
        """The export's context for one step, from its plan: this run's, else the one staged with the
        export's files (re-execution from failure), else resolved now and staged (a re-execution of
        a per-run scratch type, whose scratch went with its run)."""
        export_plan = self._plan or staged_plan(Path(self.files.data_dir), self.export_id, self._run_id)
        if export_plan is None:
            export_plan = self.fresh_context(log).plan
        if export_plan is not self._plan:
            self.keep(export_plan)
        return self._context_of(export_plan, log)

    def _context_of(self, export_plan: ExportPlan, log: Any) -> ExportContext:
        store, export_id = self.mongo.store(), export_plan.export_id
        progress = Progress(
            lambda stage, done, total: store.set_progress(export_id, stage=stage, done=done, total=total)
        )
        return context_of(export_plan, self.mongo.db(), self.s3.client(), self.files.workspace(self.s3), log, progress)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """The run ended, success or not: its own scratch goes, and any a killed run left (SPEC §5)."""
        if self._run_id:
            data_dir = Path(self.files.data_dir)
            end_run_scratch(data_dir, self._run_id)
            sweep_killed_run_scratch(data_dir, self.files.timeout_millis)
