"""`make run`'s pieces against real processes: the local S3 server (s3rver over HTTP, killed with
SIGKILL and started again on its files), the next free port, and where the demo campaign goes."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from pymongo import MongoClient

from devstack import supervisor
from devstack.supervisor import (
    S3RVER_KEY,
    Supervisor,
    import_saved_objects,
    pick_port,
    port_free,
    redact_uri,
    s3rver_command,
    seed_demo_campaign,
    should_seed,
)
from export_core.clients import ensure_buckets
from export_core.settings import Settings
from export_core.storage import MULTIPART_BYTES, list_keys, upload_file
from tests.conftest import free_port
from tests.e2e.conftest import wait_until


class LocalS3:
    """s3rver as `make run` starts it, on a directory that outlives the process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            s3rver_command(port, self.directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: listening(port), 30, "s3rver listening")
        self.endpoint = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def client(self, region: str = "us-east-1") -> Any:
        """A client as the service builds one for a local endpoint: SigV4, path-style."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=S3RVER_KEY,
            aws_secret_access_key=S3RVER_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


@pytest.fixture
def local_s3(tmp_path: Path) -> Iterator[LocalS3]:
    s3 = LocalS3(tmp_path / "s3")
    s3.directory.mkdir()
    s3.start()
    yield s3
    if s3.proc is not None and s3.proc.poll() is None:
        s3.proc.kill()
        s3.proc.wait()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_uploads_survive_a_sigkill_of_the_s3_server(local_s3: LocalS3, tmp_path: Path) -> None:
    """What the service does to a file (storage.upload_file: multipart above 16 MB, ACL, metadata,
    encryption header, Content-Disposition), then kill -9, a restart on the same files, downloads."""
    s3 = local_s3.client()
    s3.create_bucket(Bucket="exports")
    small, big = tmp_path / "small.csv", tmp_path / "big.zip"
    small.write_bytes("userId,email\r\nu1,Zoë\r\n".encode())
    big.write_bytes(os.urandom(MULTIPART_BYTES + 1_234_567))
    disposition = "attachment; filename=\"Beyonce Tour.csv\"; filename*=UTF-8''Beyonc%C3%A9%20Tour%20%F0%9F%8E%B8.csv"
    uploaded = {}
    for path, key, acl, content_type in (
        (small, "entries/123/e1/Beyonc Tour - Entries.csv", "private", "text/csv"),
        (big, "scoring/123/e2/Big - Scoring.zip", "bucket-owner-full-control", "application/zip"),
    ):
        uploaded[key] = upload_file(
            s3,
            path,
            bucket="exports",
            key=key,
            acl=acl,
            content_type=content_type,
            content_disposition=disposition,
            sse="AES256",
        )
        assert uploaded[key].sha256 == sha256(path.read_bytes())

    local_s3.kill()
    local_s3.start()
    s3 = local_s3.client()
    assert sorted(list_keys(s3, bucket="exports", prefix="")) == sorted(uploaded)
    for key, obj in uploaded.items():
        head = s3.head_object(Bucket="exports", Key=key)
        assert head["ContentLength"] == obj.bytes and head["Metadata"] == {"sha256": obj.sha256}
        assert head["ContentDisposition"] == disposition
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "exports", "Key": key}, ExpiresIn=300)
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
        download = httpx.get(url)
        assert download.status_code == 200 and sha256(download.content) == obj.sha256
        assert download.headers["content-disposition"] == disposition


def test_signed_links_list_pages_and_deletes(local_s3: LocalS3) -> None:
    """The rest of what the service asks of S3: SigV4 links with a ResponseContentDisposition in
    another region, expiry, list_objects_v2 over several pages, DeleteObjects."""
    s3 = local_s3.client("eu-west-1")
    s3.create_bucket(Bucket="exports")
    s3.put_object(Bucket="exports", Key="plain/a b.csv", Body=b"x,y\r\n", ContentType="text/csv")
    wanted = "attachment; filename=\"Zoe.csv\"; filename*=UTF-8''Zo%C3%AB.csv"
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "exports", "Key": "plain/a b.csv", "ResponseContentDisposition": wanted}
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "eu-west-1" in url
    download = httpx.get(url)
    assert download.status_code == 200 and download.content == b"x,y\r\n"
    assert download.headers["content-disposition"] == wanted
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "exports", "Key": "plain/a b.csv"}, ExpiresIn=1)
    wait_until(lambda: httpx.get(short).status_code == 403, 30, "an expired link is refused")

    keys = [f"many/{i:03d}.csv" for i in range(25)]
    for key in keys:
        s3.put_object(Bucket="exports", Key=key, Body=b"1")
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="exports", Prefix="many/", PaginationConfig={"PageSize": 10}
        )
    )
    assert [len(p["Contents"]) for p in pages] == [10, 10, 5]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    response = s3.delete_objects(Bucket="exports", Delete={"Objects": [{"Key": k} for k in keys[:20]], "Quiet": True})
    assert not response.get("Errors")
    assert list_keys(s3, bucket="exports", prefix="many/") == keys[20:]


def test_objects_saved_by_an_earlier_make_run_move_into_the_local_s3(
    local_s3: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = local_s3.directory / "exports" / "entries" / "123" / "e1" / "Tour - Entries.csv"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"userId\r\nu1\r\n")
    monkeypatch.setenv("S3_ENDPOINT_URL", local_s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3RVER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3RVER_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    # boto3's default session keeps the credentials it first found (the suite's): start a new one.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    settings = Settings.from_env()
    ensure_buckets(settings)
    assert import_saved_objects(settings, local_s3.directory) == 1
    assert not saved.exists()
    body = local_s3.client().get_object(Bucket="exports", Key="entries/123/e1/Tour - Entries.csv")["Body"].read()
    assert body == b"userId\r\nu1\r\n"
    assert import_saved_objects(settings, local_s3.directory) == 0  # s3rver's own files are left alone


# --- ports -----------------------------------------------------------------------------


def _four_free_ports() -> int:
    for _ in range(50):
        base = free_port()
        if base < 65530 and all(port_free(p) for p in range(base, base + 4)):
            return base
    raise AssertionError("no four consecutive free ports")


def test_the_next_free_port_is_the_next_one_up() -> None:
    base = _four_free_ports()
    listeners = []
    for port in (base, base + 1):
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        listeners.append(sock)
    try:
        assert pick_port(base + 2) == base + 2
        assert pick_port(base) == base + 2
        with pytest.raises(RuntimeError, match=f"between {base} and {base + 1}"):
            pick_port(base, span=2)
    finally:
        for sock in listeners:
            sock.close()


def test_addresses_in_the_banner_carry_no_credentials() -> None:
    uri = "mongodb://admin:s3cr%40t@db1.example.net:27017,db2.example.net/verifiedfan?authSource=admin&tls=true"
    assert redact_uri(uri) == "mongodb://db1.example.net:27017,db2.example.net"
    assert (
        redact_uri("mongodb+srv://u:p@cluster0.example.net/?retryWrites=true") == "mongodb+srv://cluster0.example.net"
    )
    assert redact_uri("http://127.0.0.1:4566") == "http://127.0.0.1:4566"


# --- where the demo campaign goes ------------------------------------------------------


@pytest.mark.parametrize(
    ("own_database", "seed_demo", "expected"),
    [
        (True, None, True),  # the database server make run started
        (False, None, False),  # MONGODB_URI: the user's database
        (False, "", False),
        (False, "1", True),  # asked explicitly
        (False, "yes", True),
        (True, "0", False),
        (True, "false", False),
    ],
)
def test_should_seed(own_database: bool, seed_demo: str | None, expected: bool) -> None:
    assert should_seed(own_database=own_database, seed_demo=seed_demo) is expected


def test_a_bad_seed_demo_value_is_refused() -> None:
    with pytest.raises(RuntimeError, match="SEED_DEMO must be 1"):
        should_seed(own_database=True, seed_demo="maybe")


def test_the_users_database_is_seeded_only_when_asked(
    mongo_uri: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MONGODB_URI at the suite's database: nothing is written unless SEED_DEMO=1; then the seed
    runs (as `make run` runs it) once, and a second start finds it."""
    monkeypatch.setattr(supervisor, "DEMO_ENTRIES", 300)  # the demo's shape, not its size
    name = f"t_{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": name,
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    ensure_buckets(settings)
    sup = Supervisor(env, tmp_path)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        untouched = seed_demo_campaign(sup, settings, own_database=False, own_s3=False, seed_demo=None)
        assert not untouched.present and "SEED_DEMO=1" in untouched.skipped_because
        assert name not in client.list_database_names()  # not a collection, not an index

        asked = seed_demo_campaign(sup, settings, own_database=False, own_s3=False, seed_demo="1")
        assert asked.seeded_now and asked.present
        db = client[name]
        assert db["entries"].count_documents({"campaignId": "123"}) == 300
        assert asked.wave_date_keys == sorted(db["codes"].distinct("waveDateKey"), key=int)
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        waves = list_keys(s3, bucket=settings.vf_scoring_bucket, prefix="waves/123/")
        assert waves == [f"waves/123/{k}/part-0.csv" for k in asked.wave_date_keys]

        again = seed_demo_campaign(sup, settings, own_database=False, own_s3=False, seed_demo="1")
        assert again.present and not again.seeded_now and again.wave_date_keys == asked.wave_date_keys
        assert db["entries"].count_documents({}) == 300
    finally:
        client.drop_database(name)
        client.close()
