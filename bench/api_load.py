"""API load benchmark: concurrent clients against one API process, mixed requests.

20 clients share 2,000 requests, a third each of: POST of an export that is already queued
(answered 200 with the duplicate), GET of a FINISHED export (signed URL, cached run status),
and a list page. Reports counts, errors, p50/p99 per kind and requests per second.

Each client is one keep-alive `http.client` connection: the driver shares the machine with
the service, and httpx cost more CPU per request (~0.9 ms) than the API itself.

    python -m bench.api_load    # own SecantusDB + moto + uvicorn, a few FINISHED records seeded

`run_api_load(base_url, token, campaign_ids)` is what `bench/run.py` calls against its own stack.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

KINDS = ("post_duplicate", "get_finished", "list")
EXPECTED = {"post_duplicate": {200, 201}, "get_finished": {200}, "list": {200}}
TokenSource = str | Callable[[str], str]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


class Connection:
    """One keep-alive HTTP/1.1 connection to the API; reconnects after an error."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON body or None)."""
        headers = {"Authorization": f"Bearer {token}"}
        payload = None
        if body is not None:
            payload, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return response.status, json.loads(raw) if raw else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def find_finished_exports(base_url: str, token: TokenSource, campaign_ids: Sequence[str]) -> dict[str, str]:
    """A FINISHED export per campaign (those that have one), found through the API's own list."""
    found: dict[str, str] = {}
    token_for = _token(token)
    query = urlencode({"limit": 100, "sort": "status"})
    client = Connection(base_url, 30.0)
    try:
        for campaign_id in campaign_ids:
            _status, page = client.request("GET", f"/campaigns/{campaign_id}/exports?{query}", token_for(campaign_id))
            finished = [r["id"] for r in (page or {}).get("exports", []) if r.get("status") == "FINISHED"]
            if finished:
                found[campaign_id] = finished[0]
    finally:
        client.close()
    return found


def _token(source: TokenSource) -> Callable[[str], str]:
    return source if callable(source) else (lambda _campaign_id: str(source))


def run_api_load(
    base_url: str,
    token_factory_or_token: TokenSource,
    campaign_ids: Sequence[str],
    *,
    clients: int = 20,
    requests: int = 2000,
    finished_exports: Mapping[str, str] | None = None,
    export_type: str = "entries",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Drive `requests` mixed requests from `clients` threads; each campaign needs a FINISHED export."""
    token = _token(token_factory_or_token)
    finished = dict(finished_exports or find_finished_exports(base_url, token, campaign_ids))
    campaigns = [c for c in campaign_ids if c in finished]
    if not campaigns:
        raise ValueError("no campaign has a FINISHED export to GET")
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    statuses: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    errors: dict[str, int] = dict.fromkeys(KINDS, 0)
    lock = threading.Lock()

    def one(client: Connection, n: int) -> None:
        kind = KINDS[n % len(KINDS)]
        campaign_id = campaigns[(n // len(KINDS)) % len(campaigns)]
        exports = f"/campaigns/{campaign_id}/exports"
        started = time.perf_counter()
        try:
            if kind == "post_duplicate":
                code, _ = client.request("POST", exports, token(campaign_id), {"exportType": export_type})
            elif kind == "get_finished":
                code, _ = client.request("GET", f"{exports}/{finished[campaign_id]}", token(campaign_id))
            else:
                code, _ = client.request("GET", f"{exports}?limit=20", token(campaign_id))
            status, ok = str(code), code in EXPECTED[kind]
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status, ok = type(exc).__name__, False
        elapsed_ms = (time.perf_counter() - started) * 1000
        with lock:
            latencies[kind].append(elapsed_ms)
            statuses[kind][status] = statuses[kind].get(status, 0) + 1
            if not ok:
                errors[kind] += 1

    def worker(index: int) -> None:
        client = Connection(base_url, timeout)
        try:
            for n in range(index, requests, clients):
                one(client, n)
        finally:
            client.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 2),
        "requests_per_s": round(requests / seconds, 1),
        "errors": sum(errors.values()),
        "by_kind": {
            kind: {
                "count": len(latencies[kind]),
                "errors": errors[kind],
                "statuses": statuses[kind],
                "p50_ms": _percentile(latencies[kind], 0.5),
                "p99_ms": _percentile(latencies[kind], 0.99),
                "mean_ms": round(statistics.fmean(latencies[kind]), 2) if latencies[kind] else None,
            }
            for kind in KINDS
        },
    }


# -- standalone: own servers, seeded records, one uvicorn process --------------------------------


def seed(settings: Any, campaign_ids: Sequence[str]) -> dict[str, str]:
    """Campaigns, one FINISHED export each (with its object in S3), and one queued duplicate target."""
    from export_core.clients import ensure_buckets, mongo_client, s3_client
    from export_core.records import ExportStore

    ensure_buckets(settings)
    s3 = s3_client(settings)
    finished: dict[str, str] = {}
    with mongo_client(settings) as client:
        db = client[settings.mongodb_db]
        store = ExportStore(db)
        store.ensure_indexes()
        for campaign_id in campaign_ids:
            db.campaigns.replace_one({"_id": campaign_id}, {"_id": campaign_id, "name": f"Load {campaign_id}"}, True)
            record = store.create(
                campaign_id=campaign_id, campaign_name="Load", export_type="codes", requester_user_id="bench"
            ).record
            key = f"codes/{campaign_id}/{record['id']}/Load - Codes.csv"
            s3.put_object(Bucket=settings.exports_bucket, Key=key, Body=b"code,marketId\r\n")
            store.mark_triggered(record["id"], run_id=f"bench-run-{campaign_id}", preliminary_count=None)
            store.mark_finished(record["id"], key=key, count=0, meta={})
            finished[campaign_id] = str(record["id"])
    return finished


def main() -> int:
    import logging

    import jwt
    from cryptography.fernet import Fernet

    from bench.stack import LocalServers, free_port, wait_for_port
    from devstack.supervisor import Supervisor, api_command, rsa_pem_pair
    from export_core.settings import Settings

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="api-load-"))
    servers = LocalServers(work, work)
    env = dict(os.environ)
    env.update(servers.start())
    private, public = rsa_pem_pair()
    api_port = free_port()
    env.update(
        MONGODB_DB=f"api_load_{int(time.time())}",
        DATA_DIR=str(work),
        JWT_PUBLIC_KEY=public,
        SECRETS_KEY=Fernet.generate_key().decode(),  # outside DEV_MODE the API needs one
        DEV_MODE="0",
        API_PORT=str(api_port),
        DAGSTER_GRAPHQL_URL=f"http://127.0.0.1:{free_port()}/graphql",  # no Dagster: run status degrades
    )
    os.environ.update(env)
    campaign_ids = [f"load-{i}" for i in range(5)]
    finished = seed(Settings.from_env(), campaign_ids)
    sup = Supervisor(env, work)
    try:
        sup.start("api", api_command(api_port))
        wait_for_port(api_port, "API", sup=sup)
        now = int(time.time())
        claims = {"sub": "bench", "campaigns": {c: ["REPORT"] for c in campaign_ids}, "iat": now, "exp": now + 3600}
        token = jwt.encode(claims, private, algorithm="RS256")
        url = f"http://127.0.0.1:{api_port}"
        for _ in range(3):  # warm-up: connections, the ended-run cache, the first POST of each campaign
            run_api_load(url, token, campaign_ids, clients=5, requests=30, finished_exports=finished)
        result = run_api_load(url, token, campaign_ids, finished_exports=finished)
        cpu = subprocess.run(["ps", "-o", "cputime=", "-p", str(sup.children[0][1].pid)], capture_output=True)
        result["api_process_cpu"] = cpu.stdout.decode().strip()
    finally:
        sup.stop("api")
        servers.stop()
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
