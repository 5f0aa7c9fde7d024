"""Which process executes an export's run, kept on the run as a tag, and whether that process still exists.

Dagster's DefaultRunLauncher (the local stack) cannot check a run worker's health, so run
monitoring never ends a run whose worker died with the machine (a power loss, `kill -9` of the
whole stack): the run would stay STARTED, hold the one-at-a-time queue and its record TRIGGERED
until TIMEOUT_MILLIS. Each run worker therefore records who it is when its export starts
(`ExportRunResource`), and `stale_exports_sensor` ends the runs whose worker on *this* machine
is gone. A worker on another machine (K8sRunLauncher, EcsRunLauncher) is never judged from here:
Dagster's run monitoring checks those.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass

import psutil
from dagster import DagsterInstance, DagsterRun

WORKER_TAG = "export-service/worker"
# Two readings of one process's start agree to the clock tick (10 ms); anything this far apart is
# another process that was given the same pid.
SAME_START_SECONDS = 0.5


@dataclass(frozen=True)
class RunWorker:
    """The process executing run `run`: its machine (host name and pid namespace), pid and start.

    `started` is the process's start in seconds after the machine booted (Linux counts it in
    clock ticks since boot), so a change of the wall clock never makes a live worker look like
    another process; a pid reused by a later process has another start.
    """

    run: str
    host: str
    pid_namespace: str | None
    pid: int
    started: float

    @classmethod
    def current(cls, run_id: str) -> RunWorker:
        """This process, as the worker of run `run_id`."""
        host, namespace = _machine()
        return cls(run=run_id, host=host, pid_namespace=namespace, pid=os.getpid(), started=_started(os.getpid()))

    def tags(self) -> dict[str, str]:
        return {WORKER_TAG: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def of(cls, run: DagsterRun) -> RunWorker | None:
        """The worker that tagged `run` itself; None when none did.

        A re-execution inherits its parent run's tags: a tag naming another run says nothing
        about this run's worker.
        """
        try:
            worker = cls(**json.loads(run.tags[WORKER_TAG]))
        except (KeyError, TypeError, ValueError):
            return None
        return worker if worker.run == run.run_id else None

    def on_this_machine(self) -> bool:
        """Same host name and, where the system tells it, the same pid namespace (containers)."""
        return (self.host, self.pid_namespace) == _machine()

    def is_gone(self) -> bool:
        """The process no longer exists (ended, a zombie, or its pid now names another process).

        Only meaningful `on_this_machine`. A process this user may not inspect counts as alive.
        """
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
            return abs(_started(self.pid) - self.started) > SAME_START_SECONDS
        except psutil.NoSuchProcess:  # ZombieProcess included
            return True
        except psutil.AccessDenied:
            return False


def record_worker(instance: DagsterInstance, run_id: str) -> RunWorker:
    """Tag run `run_id` with this process as its worker (shown in the Dagster UI as `export-service/worker`)."""
    worker = RunWorker.current(run_id)
    instance.add_run_tags(run_id, worker.tags())
    return worker


def _machine() -> tuple[str, str | None]:
    namespace = None
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")  # Linux: e.g. "pid:[4026531836]"
    return socket.gethostname(), namespace


def _started(pid: int) -> float:
    """Seconds from the machine's boot to the start of process `pid` (raises psutil.NoSuchProcess)."""
    return round(psutil.Process(pid).create_time() - psutil.boot_time(), 2)
