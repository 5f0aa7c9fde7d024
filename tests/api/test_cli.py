"""The `export-service` command line against a real API over HTTP (uvicorn, MongoDB-protocol server, S3)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from export_cli import cli, exports
from export_cli.api import fields_of
from export_core.export_types import REQUEST_FIELDS
from export_core.records import ExportStore
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, LiveServer
from tests.conftest import free_port


def run_cli(
    live: LiveServer, *args: str, token: str | None = None, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess:
    """The installed entry point's code in a fresh process (stdout and stdin are pipes, not TTYs)."""
    env = {**os.environ, "EXPORT_SERVICE_URL": live.url}
    env.pop("EXPORT_SERVICE_TOKEN", None)
    if token:
        env["EXPORT_SERVICE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "export_cli.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, input=input or "",
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def run_cli_without_reader(live: LiveServer, *args: str, token: str) -> subprocess.CompletedProcess:
    """The CLI writing into a real pipe whose reader has already gone (what `| head -1` leaves behind)."""
    env = {**os.environ, "EXPORT_SERVICE_URL": live.url, "EXPORT_SERVICE_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "export_cli.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the only read end: every write of the CLI now fails with EPIPE
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=60), None, stderr)


def finished_export(db: Database, s3: Any, settings: Settings, export_type: str = "entries") -> dict[str, Any]:
    """A FINISHED export of CAMPAIGN whose one file is in the bucket."""
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type=export_type, requester_user_id="u")
    export_id = record.record["id"]
    store.mark_triggered(export_id, run_id="run-done", preliminary_count=1)
    key = f"{export_type}/{CAMPAIGN}/{export_id}/Summer Tour 2024 - Entries.csv"
    s3.put_object(Bucket=settings.exports_bucket, Key=key, Body=b"userId\r\nu1\r\n")
    return store.mark_finished(export_id, key=key, count=1, meta={})


class FakeEngine(threading.Thread):
    """Moves a record the way the export run does (TRIGGERED, progress, end state); Dagster itself is not started.

    Its progress is what the server may report: a total not known yet (null), rows past a
    total that was only an estimate, and the upload counting files.
    """

    def __init__(self, db: Database, s3: Any, settings: Settings, *, fail: str | None = None, keys: int = 1) -> None:
        super().__init__(daemon=True)
        self.db, self.s3, self.settings, self.fail, self.keys = db, s3, settings, fail, keys
        self.export_id: str | None = None
        self.content = b"userId,email\r\nu1,a@example.com\r\n"

    def run(self) -> None:
        store = ExportStore(self.db)
        while self.export_id is None:
            pending = store.pending()
            if pending:
                self.export_id = str(pending[0]["_id"])
            time.sleep(0.05)
        record = store.mark_triggered(self.export_id, run_id="run-cli", preliminary_count=30)
        steps = (("extract", 10, None), ("transform", 20, 30), ("transform", 45, 30), ("upload", 2, 3))
        for stage, rows, total in steps:
            progress = {"stage": stage, "rows": rows, "total": total}
            self.db.exports.update_one({"_id": self.export_id}, {"$set": {"progress": progress}})
            time.sleep(0.4)
        if self.fail:
            store.mark_failed(self.export_id, message=self.fail)
            return
        bucket = self.settings.bucket_for("sfmcS3" if self.keys > 1 else "exportsS3")
        keys = [f"{record['exportType']}/{CAMPAIGN}/{self.export_id}/part {i}.csv" for i in range(self.keys)]
        for key in keys:
            self.s3.put_object(Bucket=bucket, Key=key, Body=self.content)
        store.mark_finished(self.export_id, key=keys if self.keys > 1 else keys[0], count=30, meta={})


def test_token_request_status_list(live_api: LiveServer) -> None:
    minted = run_cli(live_api, "token", "--campaign", CAMPAIGN, "--user-id", "cli-user")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2

    first = run_cli(live_api, "request", CAMPAIGN, "entries", "--all-markets", token=token)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("queued ") and "PENDING  entries" in first.stdout
    export_id = first.stdout.split()[1]
    again = run_cli(live_api, "request", CAMPAIGN, "entries", token=token)
    assert again.returncode == 0 and again.stdout.split()[:2] == ["existing", export_id]

    status = run_cli(live_api, "status", CAMPAIGN, export_id, token=token)
    assert status.returncode == 0 and status.stdout.split()[:3] == [export_id, "PENDING", "entries"]
    listed = run_cli(live_api, "list", CAMPAIGN, "--type", "entries", token=token)
    assert listed.returncode == 0 and export_id in listed.stdout and "1 of 1 export(s)" in listed.stdout
    assert "0 of 0" in run_cli(live_api, "list", CAMPAIGN, "--type", "codes", token=token).stdout


def test_request_wait_download_shows_progress_and_saves_the_file(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings, tmp_path: Path
) -> None:
    engine = FakeEngine(db, s3, settings)
    engine.start()
    target = tmp_path / "entries.csv"
    result = run_cli(
        live_api, "request", CAMPAIGN, "entries", "--download", str(target), "--interval", "0.1", token=token
    )
    engine.join(timeout=10)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "TRIGGERED extract 10 rows" in lines, "no total yet: a count without a bound"
    assert "TRIGGERED transform 20/30 rows" in lines and "TRIGGERED transform 30/30 rows" in lines, "never past 100 %"
    assert "TRIGGERED upload 2/3 files" in lines, "the upload counts files"
    assert any(line.startswith(f"{engine.export_id}  FINISHED  entries  30 rows") for line in lines)
    assert lines[-1] == f"saved {target}"
    assert target.read_bytes() == engine.content
    assert not list(target.parent.glob("*.part"))


def test_wait_on_a_terminal_draws_a_bar_that_never_passes_its_total(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings
) -> None:
    """The rich bar (stdout a pseudo-terminal): counts with the stage's unit, clamped at the total."""
    engine = FakeEngine(db, s3, settings)
    engine.start()
    export_id = run_cli(live_api, "request", CAMPAIGN, "entries", token=token).stdout.split()[1]
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "EXPORT_SERVICE_URL": live_api.url, "EXPORT_SERVICE_TOKEN": token, "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "export_cli.cli", "wait", CAMPAIGN, export_id, "--interval", "0.1"],
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the CLI has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    engine.join(timeout=10)
    text = output.decode(errors="replace")
    assert "TRIGGERED upload" in text and "2/3 files" in text
    assert "30/30 rows" in text and "45/30" not in text, "clamped at the total"
    assert "FINISHED finished" in text and "Traceback" not in text


def test_wait_on_a_failed_export_exits_non_zero_with_its_message(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings
) -> None:
    engine = FakeEngine(db, s3, settings, fail="The campaign has no markets.")
    engine.start()
    created = run_cli(live_api, "request", CAMPAIGN, "codes", token=token)
    export_id = created.stdout.split()[1]
    result = run_cli(live_api, "wait", CAMPAIGN, export_id, "--interval", "0.1", token=token)
    engine.join(timeout=10)
    line = one_line_error(result, cli.EXIT_EXPORT_FAILED)
    assert line == f"export-service: export {export_id} FAILED: The campaign has no markets."
    assert one_line_error(run_cli(live_api, "status", CAMPAIGN, export_id, token=token), 1) == line
    download = run_cli(live_api, "download", CAMPAIGN, export_id, token=token)
    assert one_line_error(download, 1) == line


@pytest.mark.usefixtures("extra_types")
def test_download_of_a_multi_file_export_saves_every_key(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings, tmp_path: Path
) -> None:
    engine = FakeEngine(db, s3, settings, keys=3)
    engine.start()
    # In-process main(): the extra type registered by the fixture is visible to the served app too.
    assert cli.main(["--url", live_api.url, "--token", token, "request", CAMPAIGN, "autoReminderEmail"]) == 0
    engine.join(timeout=10)
    assert (
        cli.main(["--url", live_api.url, "--token", token, "download", CAMPAIGN, str(engine.export_id), str(tmp_path)])
        == 0
    )
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert saved == [f"autoReminderEmail/{CAMPAIGN}/{engine.export_id}/part {i}.csv" for i in range(3)]
    assert all(p.read_bytes() == engine.content for p in tmp_path.rglob("*.csv"))


def test_refusals_and_outages_are_one_line(live_api: LiveServer, token: str, make_token: Any) -> None:
    bogus = one_line_error(run_cli(live_api, "request", CAMPAIGN, "bogus", token=token), cli.EXIT_REFUSED)
    assert bogus.startswith("export-service: Invalid export type: 'bogus'. (HTTP 400, request id cli-")
    missing = one_line_error(run_cli(live_api, "status", CAMPAIGN, "nope", token=token), cli.EXIT_REFUSED)
    assert missing.startswith("export-service: Export not found. (HTTP 404")
    expired = make_token(expires_in=-3600)
    assert "Token expired." in one_line_error(run_cli(live_api, "list", CAMPAIGN, token=expired), 3)
    assert "no token" in one_line_error(run_cli(live_api, "list", CAMPAIGN), cli.EXIT_USAGE)
    dead = f"http://127.0.0.1:{free_port()}"
    down = one_line_error(run_cli(live_api, "--url", dead, "status", CAMPAIGN, "x", token=token), 4)
    assert down == f"export-service: cannot reach the export-service API at {dead} (connection refused)"


def test_a_host_that_does_not_resolve_and_a_url_without_scheme_say_so(live_api: LiveServer, token: str) -> None:
    # .invalid never resolves (RFC 6761): the resolver says so, whether or not it can reach DNS.
    nowhere = "http://export-service.invalid:8000"
    unresolved = one_line_error(run_cli(live_api, "--url", nowhere, "status", CAMPAIGN, "x", token=token), 4)
    assert unresolved == (
        f"export-service: cannot reach the export-service API at {nowhere} "
        "(the host name export-service.invalid could not be resolved)"
    )
    bare = one_line_error(run_cli(live_api, "--url", "127.0.0.1:8000", "list", CAMPAIGN, token=token), 2)
    assert (
        bare == "export-service: the API URL '127.0.0.1:8000' has no scheme; write http://127.0.0.1:8000 (or https://)"
    )
    env_url = subprocess.run(
        [sys.executable, "-m", "export_cli.cli", "list", CAMPAIGN],
        env={**os.environ, "EXPORT_SERVICE_URL": "localhost:8000", "EXPORT_SERVICE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "write http://localhost:8000" in one_line_error(env_url, cli.EXIT_USAGE)
    other = one_line_error(run_cli(live_api, "--url", "ftp://127.0.0.1", "list", CAMPAIGN, token=token), 2)
    assert other == "export-service: the API URL 'ftp://127.0.0.1' must start with http:// or https://"


@pytest.mark.parametrize(
    "args",
    [("list", CAMPAIGN), ("status", CAMPAIGN, "{id}", "--json"), ("wait", CAMPAIGN, "{id}", "--interval", "0.1")],
    ids=["list", "status-json", "wait"],
)
def test_a_closed_pipe_ends_the_command_quietly(live_api: LiveServer, token: str, db: Database, args: tuple) -> None:
    """`export-service list 123 | head -1`: the reader leaves, the CLI stops without a traceback."""
    record = (
        ExportStore(db)
        .create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u")
        .record
    )  # PENDING: `wait` shows its progress line at once, then would poll on
    result = run_cli_without_reader(live_api, *(a.format(id=record["id"]) for a in args), token=token)
    assert result.returncode == cli.EXIT_BROKEN_PIPE, result.stderr
    assert result.stderr == ""


def test_download_into_a_folder_that_does_not_exist_says_so(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings, tmp_path: Path
) -> None:
    record = finished_export(db, s3, settings)
    missing = tmp_path / "no-such-folder"
    for target in (missing / "entries.csv", f"{missing}/"):
        result = run_cli(live_api, "download", CAMPAIGN, record["id"], str(target), token=token)
        line = one_line_error(result, cli.EXIT_USAGE)
        assert line == f"export-service: the folder {missing} does not exist; create it first or choose another path"
    assert not missing.exists(), "nothing created"
    saved = run_cli(live_api, "download", CAMPAIGN, record["id"], str(tmp_path), token=token)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "Summer Tour 2024 - Entries.csv").read_bytes() == b"userId\r\nu1\r\n"
    # `request --download` says it before queueing anything.
    refused = run_cli(live_api, "request", CAMPAIGN, "codes", "--download", str(missing / "codes.csv"), token=token)
    assert "does not exist" in one_line_error(refused, cli.EXIT_USAGE)
    assert db.exports.count_documents({"exportType": "codes"}) == 0


@pytest.mark.usefixtures("extra_types")
def test_a_multi_file_download_creates_its_folder_only_inside_one_that_exists(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings, tmp_path: Path
) -> None:
    engine = FakeEngine(db, s3, settings, keys=2)
    engine.start()
    assert cli.main(["--url", live_api.url, "--token", token, "request", CAMPAIGN, "autoReminderEmail"]) == 0
    engine.join(timeout=10)
    base = ["--url", live_api.url, "--token", token, "download", CAMPAIGN, str(engine.export_id)]
    with pytest.raises(SystemExit) as refused:
        cli.main([*base, str(tmp_path / "a" / "b")])
    assert refused.value.code == cli.EXIT_USAGE and not (tmp_path / "a").exists()
    assert cli.main([*base, str(tmp_path / "new")]) == 0
    assert len(list((tmp_path / "new").rglob("*.csv"))) == 2


def test_rerun_goes_through_the_api(
    live_api: LiveServer, token: str, db: Database, s3: Any, settings: Settings
) -> None:
    """Only the API is asked: a FINISHED export is refused (409); with the engine unreachable the
    API answers 503 and the FAILED export stays as it was. The re-run itself: tests/e2e/test_api_reruns.py."""
    finished = finished_export(db, s3, settings)
    refused = one_line_error(run_cli(live_api, "rerun", CAMPAIGN, finished["id"], token=token), cli.EXIT_REFUSED)
    assert refused.startswith("export-service: Only a FAILED or EXPIRED export can be re-run; this one is FINISHED.")
    assert "(HTTP 409, request id cli-" in refused
    store = ExportStore(db)
    failed = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="codes", requester_user_id="u").record
    store.mark_failed(failed["id"], message="The campaign has no markets.")
    unreachable = one_line_error(run_cli(live_api, "rerun", CAMPAIGN, failed["id"], "--wait", token=token), 3)
    assert unreachable.startswith("export-service: The export engine is unreachable right now")
    assert "(HTTP 503" in unreachable
    after = store.get(failed["id"])
    assert after is not None and after["status"] == "FAILED"
    assert after["error"]["message"] == "The campaign has no markets."


def test_cli_imports_neither_dagster_nor_the_server() -> None:
    """Nor the core's drivers and transports: only its plain constants (export_core/vocabulary.py and the like)."""
    server = "{'dagster', 'starlette', 'export_api', 'export_pipelines', 'pymongo', 'paramiko', 'boto3', 'polars'}"
    code = f"import sys, export_cli.cli; assert not {server} & {{m.split('.')[0] for m in sys.modules}}, sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_request_has_a_flag_for_every_field_the_service_takes() -> None:
    """Each flag stores under the field it fills; a field renamed in the service would be missing here."""
    args = cli.parser().parse_args(
        ["request", CAMPAIGN, "codeWaves", "--date-key", "1", "--all-markets", "--format", "xlsx",
         "--since", "2027-03-01T00:00:00Z", "--destination", "d"]
    )  # fmt: skip
    body = fields_of(vars(args), [*REQUEST_FIELDS, *exports.EXPORT_OPTIONS])
    assert body == {
        "exportType": "codeWaves", "dateKey": "1", "includeAllMarkets": True, "format": "xlsx",
        "since": "2027-03-01T00:00:00Z", "destinations": ["d"],
    }  # fmt: skip
