"""Two API processes (uvicorn, as deployed: deploy/k8s/api.yaml runs >= 2) against one MongoDB."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from pymongo.database import Database

from devstack.supervisor import api_command
from export_core.records import PENDING
from export_core.settings import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import wait_until

CAMPAIGN = "replicas-1"
THREADS = 20


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/heartbeat", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def replicas(env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """Two uvicorn processes with the test's environment (same database), on two ports."""
    procs, urls = [], []
    for number in range(2):
        port = free_port()
        log = (tmp_path / f"api-{number}.log").open("ab")
        proc = subprocess.Popen(
            api_command(port), env=dict(os.environ), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_until(lambda url=url: _up(url), 60, f"API replica {url} up")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_identical_requests_to_both_replicas_make_one_record(
    replicas: list[str], db: Database, jwt_keys: tuple[str, str]
) -> None:
    db["campaigns"].insert_one({"_id": CAMPAIGN, "name": "Replica Tour", "type": "standard"})
    claims = {"sub": "admin-1", "campaigns": {CAMPAIGN: ["REPORT"]}, "exp": int(time.time()) + 600}
    headers = {"Authorization": f"Bearer {jwt.encode(claims, jwt_keys[0], algorithm='RS256')}"}
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post(number: int) -> None:
        with httpx.Client(base_url=replicas[number % 2], headers=headers, timeout=30) as client:
            barrier.wait()
            response = client.post(f"/campaigns/{CAMPAIGN}/exports", json={"exportType": "entries"})
        with lock:
            answers.append((response.status_code, response.json().get("id", response.text)))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(code for code, _ in answers) == [200] * (THREADS - 1) + [201]
    ids = {export_id for _, export_id in answers}
    assert len(ids) == 1
    (export_id,) = ids
    assert db["exports"].count_documents({"campaignId": CAMPAIGN}) == 1

    views = []
    for url in replicas:
        response = httpx.get(f"{url}/campaigns/{CAMPAIGN}/exports/{export_id}", headers=headers, timeout=10)
        assert response.status_code == 200
        views.append({k: v for k, v in response.json().items() if k != "run"})
    assert views[0] == views[1] and views[0]["status"] == PENDING and views[0]["id"] == export_id
    listings = [
        httpx.get(f"{url}/campaigns/{CAMPAIGN}/exports", headers=headers, timeout=10).json() for url in replicas
    ]
    assert listings[0] == listings[1]
