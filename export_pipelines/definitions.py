"""The Dagster code location: every export job, the sensors that drive them, one resource."""

import warnings

from dagster import BetaWarning, Definitions

from export_pipelines.jobs import EXPORT_JOBS
from export_pipelines.resources import ExportServiceResource
from export_pipelines.sensors import (
    export_run_canceled_sensor,
    export_run_failure_sensor,
    pending_exports_sensor,
    stale_exports_sensor,
)

# Dagster's own run status sensors emit a BetaWarning about `owners` on every load.
warnings.filterwarnings("ignore", category=BetaWarning)

defs = Definitions(
    jobs=list(EXPORT_JOBS.values()),
    sensors=[pending_exports_sensor, export_run_failure_sensor, export_run_canceled_sensor, stale_exports_sensor],
    resources={"service": ExportServiceResource()},
)
