"""The `export-service` command line against a real API over HTTP (uvicorn, MongoDB-protocol server, S3)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from export_api import cli
from export_pipelines.domain.records import ExportStore
from export_pipelines.domain.settings import Settings
from tests.api.conftest import CAMPAIGN, LiveServer
from tests.conftest import free_port


def run_cli(live: LiveServer, *args: str, token: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The installed entry point's code in a fresh process (stdout is a pipe, not a TTY)."""
    env = {**os.environ, "EXPORT_SERVICE_URL": live.url}
    env.pop("EXPORT_SERVICE_TOKEN", None)
    if token:
        env["EXPORT_SERVICE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "export_api.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


class FakeEngine(threading.Thread):
    """Moves a record the way the export run does (TRIGGERED, progress, end state); Dagster itself is not started."""

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
        for stage, rows in (("extract", 0), ("extract", 10), ("transform", 20), ("upload", 30)):
            progress = {"stage": stage, "rows": rows, "total": 30}
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
    target = tmp_path / "out" / "entries.csv"
    result = run_cli(
        live_api, "request", CAMPAIGN, "entries", "--download", str(target), "--interval", "0.1", token=token
    )
    engine.join(timeout=10)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "TRIGGERED extract 10/30 rows" in lines and "TRIGGERED transform 20/30 rows" in lines
    assert any(line.startswith(f"{engine.export_id}  FINISHED  entries  30 rows") for line in lines)
    assert lines[-1] == f"saved {target}"
    assert target.read_bytes() == engine.content
    assert not list(target.parent.glob("*.part"))


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


def test_rerun_is_the_rerun_tool(live_api: LiveServer, db: Database) -> None:
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u").record
    store.mark_failed(record["id"], message="boom")
    result = run_cli(live_api, "rerun", "--dry-run", "--export-type", "entries")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"entries: would re-run 1 export(s): {record['id']}"


def test_cli_imports_neither_dagster_nor_the_server() -> None:
    code = (
        "import sys, export_api.cli; "
        "assert not {'dagster', 'starlette', 'pymongo', 'export_api.app'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
