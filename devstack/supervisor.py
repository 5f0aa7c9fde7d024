"""`make run`: start the whole service locally on 127.0.0.1 and stop all of it on Ctrl-C/SIGTERM.

Starts (unless MONGODB_URI / S3_ENDPOINT_URL point elsewhere) a MongoDB-protocol server with its
files under DATA_DIR/mongodb and s3rver, an S3-compatible server that keeps every bucket and
object as files under DATA_DIR/s3 (an upload is in its files before it is answered, so a crash or
a kill -9 of the stack loses no finished export), each on the first free port from 27017 / 4566
up; then the Dagster daemon, the Dagster webserver and the API. Demo campaign 123 is seeded only
into the database server started here, or wherever SEED_DEMO=1 asks for it: never uninvited into
the database MONGODB_URI points at. With DAGSTER_POSTGRES_URL set, Dagster keeps runs, event logs
and schedules in that PostgreSQL.

Nothing here depends on its output being read: a closed stdout or stderr (`make run | tee run.log`
and Ctrl-C, where tee ends first) is ignored, and the stop path runs all the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from export_core.settings import REPO_ROOT, Settings

BIN = Path(sys.executable).parent
STOP_GRACE_SECONDS = 10
WORKSPACE = str(REPO_ROOT / "workspace.yaml")
MONGODB_PORT, S3_PORT = 27017, 4566
PORT_SCAN = 100  # "next free port": the first free one of this many from the preferred one up
DEMO_CAMPAIGN = "123"
DEMO_ENTRIES = 50_000

# s3rver, pinned by devstack/s3rver/package-lock.json and installed by `make install` (npm ci).
S3RVER_DIR = REPO_ROOT / "devstack" / "s3rver"
S3RVER_SCRIPT = S3RVER_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
S3RVER_KEY = "S3RVER"  # noqa: S105 - the one access key id (and secret) s3rver 3.7.1 accepts; local only

# -- safe output: the person at the terminal may have gone (a `| tee` that ended first) --


def _silence(stream: TextIO) -> None:
    """Point a closed stream's file descriptor at /dev/null, so no later write or the final flush at
    exit fails again (Python would otherwise end with status 120)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def say(text: str, *, err: bool = False) -> None:
    """Print a line for the person at the terminal; a closed stdout/stderr is ignored, never fatal."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):  # BrokenPipeError is an OSError; ValueError: the stream is closed
        _silence(stream)


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


def s3rver_command(port: int, directory: Path) -> list[str]:
    """s3rver on 127.0.0.1:`port`, its buckets and objects as files under `directory`.

    `--openssl-legacy-provider`: s3rver's list_objects_v2 continuation tokens use DES, which
    OpenSSL 3 keeps in its legacy provider (without it a listing of more than one page is a 500).
    """
    node = shutil.which("node") or "node"
    return [
        node,
        "--openssl-legacy-provider",
        str(S3RVER_SCRIPT),
        "--directory",
        str(directory),
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-vhost-buckets",
        "--silent",  # no request log: it would print a stack trace for every ListMultipartUploads
    ]


def s3_command(port: int) -> list[str]:
    """moto's S3 server, objects in memory only: the bench's throw-away S3 (`make run` uses s3rver)."""
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
        (): export_core.json_logs.JsonFormatter
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


# -- ports --


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` and a server could bind it (as servers do, SO_REUSEADDR)."""
    if _listening(port):
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, span: int = PORT_SCAN) -> int:
    """The first free port from `preferred` up, among `span` ports: the next free one, predictably."""
    last = min(preferred + span, 65536) - 1
    for port in range(preferred, last + 1):
        if port_free(port):
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {preferred} and {last}")


def _die_with_parent() -> None:
    """Children get SIGTERM if this supervisor dies, even by SIGKILL: no orphans.

    Runs in the child between fork and exec, so it covers the very process of each command (the
    database server, node running s3rver, the Dagster processes, uvicorn), not a wrapper shell.
    """
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


class StopRequested(Exception):
    """Ctrl-C/SIGTERM/SIGHUP arrived while the stack was still starting."""


class Supervisor:
    """Starts child processes in their own sessions and stops them in reverse order."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stop_requested = False  # set by main's signal handler

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
        if self.stop_requested:
            raise StopRequested
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def wait_for_port(self, port: int, name: str, timeout: float = 60.0) -> None:
        """Until something listens on 127.0.0.1:`port`; fails early when a child exits or a stop is asked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if _listening(port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start listening on 127.0.0.1:{port} within {timeout:.0f} s")

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
                    say(f"{name} did not stop within {STOP_GRACE_SECONDS} s; killing it")
            # Whatever is left in its group (e.g. a run worker of the daemon) goes too.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self, order: tuple[str, ...]) -> None:
        """Stop the named children in this order, then any other; one that fails to stop never keeps
        the others running."""
        names = [*order, *(n for n, _ in self.children if n not in order)]
        for name in names:
            try:
                self.stop(name)
            except Exception as exc:  # noqa: BLE001 - shutting down: carry on with the others
                say(f"could not stop {name}: {exc}", err=True)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# -- the local S3 --


def import_saved_objects(settings: Settings, root: Path) -> int:
    """Move objects an earlier `make run` saved as plain files (DATA_DIR/s3/{bucket}/{key}, from the
    in-memory S3 server it used then) into s3rver, so their exports stay downloadable; returns how many."""
    from export_core.clients import s3_client

    client = s3_client(settings)
    moved = 0
    for bucket in settings.all_buckets:
        base = root / bucket
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(base)
            # s3rver's own files all carry "._S3rver_" (objects, metadata, unfinished uploads).
            if not path.is_file() or any("._S3rver_" in part for part in relative.parts):
                continue
            client.upload_file(str(path), bucket, relative.as_posix())
            path.unlink()
            moved += 1
    return moved


# -- the demo campaign --

SEED_DEMO_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def should_seed(*, own_database: bool, seed_demo: str | None) -> bool:
    """Whether `make run` seeds the demo campaign: by default only into the database server it
    started itself; SEED_DEMO=1 asks for it anywhere (MONGODB_URI's database too), SEED_DEMO=0 never."""
    value = (seed_demo or "").strip().lower()
    if not value:
        return own_database
    if value not in SEED_DEMO_VALUES:
        raise RuntimeError(f"SEED_DEMO must be 1 (seed the demo campaign) or 0 (do not), not {seed_demo!r}")
    return SEED_DEMO_VALUES[value]


@dataclass
class DemoCampaign:
    """What the banner says about demo campaign 123."""

    seeded_now: bool = False
    present: bool = False
    wave_date_keys: list[str] = field(default_factory=list)
    skipped_because: str = ""


def _demo_state(settings: Settings) -> tuple[bool, list[str]]:
    """(campaign 123 is in the database, its SMS waves' dateKeys in order)."""
    from pymongo import MongoClient
    from pymongo.database import Database

    client: MongoClient[dict[str, Any]]
    with MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        db: Database[dict[str, Any]] = client[settings.mongodb_db]
        if db["campaigns"].find_one({"_id": DEMO_CAMPAIGN}, {"_id": 1}) is None:
            return False, []
        keys = db["codes"].distinct("waveDateKey", {"campaignId": DEMO_CAMPAIGN})
    return True, sorted((str(k) for k in keys if k is not None), key=lambda k: (len(k), k))


def seed_demo_campaign(
    sup: Supervisor, settings: Settings, *, own_database: bool, own_s3: bool, seed_demo: str | None
) -> DemoCampaign:
    """Seed demo campaign 123 where `should_seed` allows it (once: never over an existing campaign)."""
    if not should_seed(own_database=own_database, seed_demo=seed_demo):
        reason = (
            "SEED_DEMO=0"
            if (seed_demo or "").strip()
            else "MONGODB_URI points at your own database; SEED_DEMO=1 make run seeds it there"
        )
        return DemoCampaign(skipped_because=reason)
    present, waves = _demo_state(settings)
    if present:
        return DemoCampaign(present=True, wave_date_keys=waves)
    command = [sys.executable, "-m", "devstack.seed", "--if-empty", "--campaign-id", DEMO_CAMPAIGN]
    command += ["--uri", settings.mongodb_uri, "--db", settings.mongodb_db, "--entries", str(DEMO_ENTRIES)]
    # The SMS wave files go to the S3 server started here, or to yours only when SEED_DEMO asked.
    if own_s3 or (seed_demo or "").strip():
        command += ["--vf-scoring-bucket", settings.vf_scoring_bucket]
    say(f"seeding demo campaign {DEMO_CAMPAIGN} ({DEMO_ENTRIES:,} entries, about 30 s)...")
    done = subprocess.run(command, env=sup.env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    sup.check()  # a Ctrl-C during the seed ends it too: that is a stop, not a failure
    for line in (done.stdout + done.stderr).splitlines()[-20:]:
        say(line)
    if done.returncode != 0:
        raise RuntimeError(f"seeding demo campaign {DEMO_CAMPAIGN} failed (exit status {done.returncode})")
    present, waves = _demo_state(settings)
    return DemoCampaign(seeded_now=True, present=present, wave_date_keys=waves)


# -- the banner --


def redact_uri(uri: str) -> str:
    """A server address fit for a terminal: scheme and hosts, without credentials, path or options."""
    match = re.match(r"^([a-z][a-z0-9+.-]*://)(?:[^@/?#]*@)?([^/?#]*)", uri, re.IGNORECASE)
    return match.group(1) + match.group(2) if match else "(set)"


def demo_text(demo: DemoCampaign) -> str:
    if demo.skipped_because:
        return f"Demo campaign {DEMO_CAMPAIGN}: not seeded ({demo.skipped_because})."
    how = (
        f"seeded just now ({DEMO_ENTRIES:,} entries in 7 markets)"
        if demo.seeded_now
        else "already in the database (not seeded again)"
    )
    if not demo.wave_date_keys:
        return f"Demo campaign {DEMO_CAMPAIGN}: {how}; it has no SMS wave codes."
    return f"Demo campaign {DEMO_CAMPAIGN}: {how}; its SMS waves have the dateKeys {' and '.join(demo.wave_date_keys)}."


def curl_example(api: str) -> str:
    """The curl session of the banner and the README: paste it whole, it waits for the export's end."""
    return f"""api={api}
get() {{ python3 -c 'import sys,json; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }}
TOKEN=$(curl -s -X POST $api/dev/token -H 'content-type: application/json' \\
    -d '{{"userId":"admin-1","campaignId":"123","permissions":["REPORT"]}}' | get token)
AUTH="Authorization: Bearer $TOKEN"
EXPORT=$(curl -s -X POST $api/campaigns/123/exports -H "$AUTH" \\
    -H 'content-type: application/json' -d '{{"exportType":"entries"}}' | get id)
while STATUS=$(curl -s $api/campaigns/123/exports/$EXPORT -H "$AUTH" | get status); echo "$STATUS"; \\
    [ "$STATUS" = PENDING ] || [ "$STATUS" = TRIGGERED ]; do sleep 2; done
[ "$STATUS" = FINISHED ] && \\
    curl -s -o entries.csv "$(curl -s $api/campaigns/123/exports/$EXPORT -H "$AUTH" | get path)\""""


def banner(settings: Settings, *, api: str, dagster: str, mongodb: str, s3: str, demo: DemoCampaign) -> str:
    cli = BIN / "export-service"
    wave = demo.wave_date_keys[0] if demo.wave_date_keys else "DATE_KEY"
    curl = "\n".join("  " + line for line in curl_example(api).splitlines())
    return f"""
export-service is running.
  API        {api}      (GET {api}/heartbeat, metrics at {api}/metrics)
  API docs   {api}/docs      (interactive; the OpenAPI document is {api}/openapi.json)
  Dagster UI {dagster}
  MongoDB    {mongodb}
  S3         {s3}
  data       {settings.data_dir}   (logs in {settings.data_dir / "logs"}: JSON lines in api.jsonl and runs.jsonl)
  Dagster storage: {"PostgreSQL (DAGSTER_POSTGRES_URL)" if settings.dagster_postgres_url else "SQLite in DATA_DIR"}

{demo_text(demo)}

Try it in another shell with the command-line client (it needs only these two variables):
  export EXPORT_SERVICE_URL={api}
  export EXPORT_SERVICE_TOKEN=$({cli} token --campaign 123)
  {cli} request 123 entries --wait --download entries.csv
  {cli} request 123 codeWaves --date-key {wave} --wait
  {cli} list 123
  {cli} rerun 123 EXPORT_ID      # re-run a FAILED or EXPIRED export

or with curl (paste it whole: it waits until the export has ended):
{curl}

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

    sup = Supervisor(env, log_dir)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        sup.stop_requested = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)

    own_database = not os.environ.get("MONGODB_URI")
    own_s3 = not os.environ.get("S3_ENDPOINT_URL")
    try:
        should_seed(own_database=own_database, seed_demo=os.environ.get("SEED_DEMO"))  # a bad value stops here
        if own_database:
            port = pick_port(MONGODB_PORT)
            sup.start("mongodb", mongodb_command(port, data_dir / "mongodb", "--sync-on-commit"))
            sup.wait_for_port(port, "MongoDB-protocol server")
            env["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
            mongodb = f"mongodb://127.0.0.1:{port}   (SecantusDB, files in {data_dir / 'mongodb'})"
        else:
            mongodb = f"{redact_uri(os.environ['MONGODB_URI'])}   (MONGODB_URI)"
        if own_s3:
            if not S3RVER_SCRIPT.exists():
                raise RuntimeError("the local S3 server (s3rver) is not installed: `make run` installs it")
            port = pick_port(S3_PORT)
            (data_dir / "s3").mkdir(parents=True, exist_ok=True)
            sup.start("s3", s3rver_command(port, data_dir / "s3"))
            sup.wait_for_port(port, "S3 server")
            env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = S3RVER_KEY
            env.pop("AWS_SESSION_TOKEN", None)
            os.environ.pop("AWS_SESSION_TOKEN", None)
            s3 = f"http://127.0.0.1:{port}   (s3rver, objects in {data_dir / 's3'})"
        else:
            s3 = f"{redact_uri(os.environ['S3_ENDPOINT_URL'])}   (S3_ENDPOINT_URL)"
        os.environ.update(env)
        settings = Settings.from_env()
        from export_core.clients import ensure_buckets

        ensure_buckets(settings)
        if own_s3 and (moved := import_saved_objects(settings, data_dir / "s3")):
            say(f"moved {moved} object(s) saved by an earlier make run into the local S3 server")
        demo = seed_demo_campaign(
            sup, settings, own_database=own_database, own_s3=own_s3, seed_demo=os.environ.get("SEED_DEMO")
        )
        # Create/upgrade Dagster's storage before its two processes start and race to do it.
        with (log_dir / "dagster-migrate.log").open("ab") as migrate_log:
            migrated = subprocess.run(MIGRATE_COMMAND, env=env, cwd=REPO_ROOT, stdout=migrate_log, stderr=migrate_log)
        sup.check()
        if migrated.returncode != 0:
            raise RuntimeError(f"dagster instance migrate failed; see {log_dir / 'dagster-migrate.log'}")
        sup.start("dagster-daemon", DAEMON_COMMAND)
        sup.start("dagster-webserver", webserver_command(settings.dagster_port))
        sup.start("api", api_command(settings.api_port))
        sup.wait_for_port(settings.api_port, "API")
        sup.wait_for_port(settings.dagster_port, "Dagster webserver", timeout=120)
        api, dagster = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.dagster_port}"
        say(banner(settings, api=api, dagster=dagster, mongodb=mongodb, s3=s3, demo=demo))
        while True:
            sup.check()
            time.sleep(0.5)
    except StopRequested:
        return 0
    except RuntimeError as exc:
        say(f"error: {exc}", err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. a server that does not answer: say so, then stop the rest
        say(f"error: {type(exc).__name__}: {exc}", err=True)
        return 1
    finally:
        say("stopping...")
        sup.stop_all(("api", "dagster-webserver", "dagster-daemon", "s3", "mongodb"))
        say("stopped.")


if __name__ == "__main__":
    sys.exit(main())
