"""`make run`: start the whole service locally on 127.0.0.1 and stop all of it on Ctrl-C/SIGTERM.

Starts (unless MONGODB_URI / S3_ENDPOINT_URL point elsewhere) a MongoDB-protocol server with
its files under DATA_DIR and moto's S3 server with the four buckets, then the Dagster
daemon, the Dagster webserver and the API. Seeds a demo campaign into an empty database.
The local S3 server keeps objects in memory: its buckets are saved under DATA_DIR on
shutdown and restored on start, so a second `make run` finds its files again. With
DAGSTER_POSTGRES_URL set, Dagster keeps runs, event logs and schedules in that PostgreSQL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from export_pipelines.domain.settings import REPO_ROOT, Settings

BIN = Path(sys.executable).parent
STOP_GRACE_SECONDS = 10
WORKSPACE = str(REPO_ROOT / "workspace.yaml")

# -- the command line of each process of the local stack (here, the bench and the e2e tests) --


def mongodb_command(port: int, storage: Path, *options: str) -> list[str]:
    return [
        str(BIN / "secantusd-py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        *options,
    ]


def s3_command(port: int) -> list[str]:
    return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]


MIGRATE_COMMAND = [str(BIN / "dagster"), "instance", "migrate"]
DAEMON_COMMAND = [str(BIN / "dagster-daemon"), "run", "-w", WORKSPACE]


def webserver_command(port: int) -> list[str]:
    return [str(BIN / "dagster-webserver"), "-w", WORKSPACE, "-h", "127.0.0.1", "-p", str(port)]


def api_command(port: int) -> list[str]:
    # No uvicorn access log: the app writes its own JSON access lines (route templates, no raw paths).
    return [str(BIN / "uvicorn"), "export_api.app:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


# Appended to the repo's dagster.yaml when DAGSTER_POSTGRES_URL is set. The URL is read from the
# environment by every Dagster process (never written to disk: it carries the password).
POSTGRES_STORAGE = """
# Written by devstack because DAGSTER_POSTGRES_URL is set: runs, event logs and schedules in PostgreSQL.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
"""


# Appended when the runs' log lines should go to a file: one JSON object per line (time, level,
# message, run id, step, request id, export id), through the same formatter as the API's.
RUN_LOG_FILE = """
# Written by devstack: every run's log lines as JSON in {path}.
python_logs:
  dagster_handler_config:
    handlers:
      runs_jsonl:
        class: logging.FileHandler
        level: INFO
        filename: {path}
        formatter: json
    formatters:
      json:
        (): export_pipelines.domain.json_logs.JsonFormatter
"""


def write_instance_config(dagster_home: Path, *, postgres: bool, log_dir: Path | None = None) -> Path:
    """DAGSTER_HOME/dagster.yaml: the repo's instance config, plus PostgreSQL storage when asked, plus the
    runs' JSON log file under `log_dir` (runs.jsonl).

    Without the storage block Dagster keeps its embedded SQLite files in DAGSTER_HOME.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = (REPO_ROOT / "dagster.yaml").read_text()
    if postgres:
        text += POSTGRES_STORAGE
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        text += RUN_LOG_FILE.format(path=json.dumps(str(log_dir / "runs.jsonl")))
    target.write_text(text)
    return target


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _pick_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _port_free(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not start listening on 127.0.0.1:{port} within {timeout:.0f} s")


def _die_with_parent() -> None:
    """Children get SIGTERM if this supervisor dies, even by SIGKILL: no orphans."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rsa_pem_pair() -> tuple[str, str]:
    """A fresh RS256 key pair as (private PKCS8 PEM, public SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public.decode()


def ensure_dev_keys(data_dir: Path) -> None:
    """Generate the dev key pair /dev/token signs with, once per DATA_DIR."""
    keys = data_dir / "keys"
    if (keys / "dev_private.pem").exists():
        return
    keys.mkdir(parents=True, exist_ok=True)
    private, public = rsa_pem_pair()
    (keys / "dev_public.pem").write_text(public)
    private_path = keys / "dev_private.pem"
    private_path.touch(mode=0o600)
    private_path.write_text(private)


class Supervisor:
    """Starts child processes in their own sessions and stops them in reverse order."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], *, quiet: bool = True) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab") if quiet else None
        proc = subprocess.Popen(
            args,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT if quiet else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets the death signal
        )
        self.children.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def stop(self, name: str) -> None:
        """SIGTERM to the child's whole process group, SIGKILL after a grace period."""
        for child_name, proc in self.children:
            if child_name != name:
                continue
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop within {STOP_GRACE_SECONDS} s; killing it", flush=True)
            # Whatever is left in its group (e.g. a run worker of the daemon) goes too.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def save_s3(settings: Settings, target: Path) -> int:
    """Copy every object of the four buckets to `target` (the local S3 server forgets on exit)."""
    from export_pipelines.domain.clients import s3_client

    client = s3_client(settings)
    shutil.rmtree(target, ignore_errors=True)
    saved = 0
    for bucket in settings.all_buckets:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                path = target / bucket / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(path))
                saved += 1
    return saved


def restore_s3(settings: Settings, source: Path) -> int:
    from export_pipelines.domain.clients import s3_client

    client = s3_client(settings)
    restored = 0
    for bucket in settings.all_buckets:
        root = source / bucket
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
            client.upload_file(str(path), bucket, path.relative_to(root).as_posix())
            restored += 1
    return restored


def banner(settings: Settings, api: str, dagster: str) -> str:
    cli = BIN / "export-service"
    return f"""
export-service is running.
  API        {api}      (GET {api}/heartbeat, metrics at {api}/metrics)
  API docs   {api}/docs      (interactive; the OpenAPI document is {api}/openapi.json)
  Dagster UI {dagster}
  data       {settings.data_dir}   (logs in {settings.data_dir / "logs"}: JSON lines in api.jsonl and runs.jsonl)
  Dagster storage: {"PostgreSQL (DAGSTER_POSTGRES_URL)" if settings.dagster_postgres_url else "SQLite in DATA_DIR"}

Try it (demo campaign 123 is seeded); in another shell, with the command-line client:
  export EXPORT_SERVICE_URL={api}
  export EXPORT_SERVICE_TOKEN=$({cli} token --campaign 123)
  {cli} request 123 entries --wait --download entries.csv
  {cli} list 123

or with curl:
  get() {{ python3 -c 'import sys,json; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }}
  TOKEN=$(curl -s -X POST {api}/dev/token -H 'content-type: application/json' \\
      -d '{{"userId":"admin-1","campaignId":"123","permissions":["REPORT"]}}' | get token)
  AUTH="Authorization: Bearer $TOKEN"
  EXPORT=$(curl -s -X POST {api}/campaigns/123/exports -H "$AUTH" \\
      -H 'content-type: application/json' -d '{{"exportType":"entries"}}' | get id)
  curl -s {api}/campaigns/123/exports/$EXPORT -H "$AUTH" | get status   # until FINISHED
  curl -s -o entries.csv "$(curl -s {api}/campaigns/123/exports/$EXPORT -H "$AUTH" | get path)"

Ctrl-C stops everything.
"""


def main() -> int:
    settings = Settings.from_env()
    data_dir = settings.data_dir
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DEV_MODE", "1")
    env.setdefault("LOG_DIR", str(log_dir))  # the API writes LOG_DIR/api.jsonl
    if not os.environ.get("JWT_PUBLIC_KEY"):
        ensure_dev_keys(data_dir)
    dagster_home = data_dir / "dagster_home"
    write_instance_config(
        dagster_home, postgres=settings.dagster_postgres_url is not None, log_dir=settings.data_dir / "logs"
    )
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PYTHONUNBUFFERED"] = "1"

    stopping = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    sup = Supervisor(env, log_dir)
    own_s3 = not os.environ.get("S3_ENDPOINT_URL")
    try:
        if not os.environ.get("MONGODB_URI"):
            port = _pick_port(27017)
            sup.start("mongodb", mongodb_command(port, data_dir / "mongodb", "--sync-on-commit"))
            _wait_for_port(port, "MongoDB-protocol server")
            env["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        if own_s3:
            port = _pick_port(4566)
            sup.start("s3", s3_command(port))
            _wait_for_port(port, "S3 server")
            env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            env.setdefault("AWS_ACCESS_KEY_ID", "local")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        os.environ.update(env)
        settings = Settings.from_env()
        from export_pipelines.domain.clients import ensure_buckets

        ensure_buckets(settings)
        if own_s3:
            restored = restore_s3(settings, data_dir / "s3")
            if restored:
                print(f"restored {restored} object(s) into the local S3 server", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack.seed",
                "--if-empty",
                "--campaign-id",
                "123",
                "--uri",
                settings.mongodb_uri,
                "--db",
                settings.mongodb_db,
                "--entries",
                "50000",
                "--vf-scoring-bucket",
                settings.vf_scoring_bucket,
            ],
            env=env,
            cwd=REPO_ROOT,
            check=True,
        )
        # Create/upgrade Dagster's storage before its two processes start and race to do it.
        subprocess.run(MIGRATE_COMMAND, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        sup.start("dagster-daemon", DAEMON_COMMAND)
        sup.start("dagster-webserver", webserver_command(settings.dagster_port))
        sup.start("api", api_command(settings.api_port))
        _wait_for_port(settings.api_port, "API")
        _wait_for_port(settings.dagster_port, "Dagster webserver", timeout=120)
        print(
            banner(settings, f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.dagster_port}"),
            flush=True,
        )
        while not stopping:
            sup.check()
            time.sleep(0.5)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping...", flush=True)
        for name in ("api", "dagster-webserver", "dagster-daemon"):
            sup.stop(name)
        if own_s3 and any(n == "s3" for n, _ in sup.children):
            try:
                print(f"saved {save_s3(settings, data_dir / 's3')} S3 object(s) to {data_dir / 's3'}", flush=True)
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                print(f"could not save the local S3 objects: {exc}", file=sys.stderr)
        for name in ("s3", "mongodb"):
            sup.stop(name)
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
