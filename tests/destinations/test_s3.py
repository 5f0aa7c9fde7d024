"""S3 deliveries into a partner bucket of the suite's S3 server (a second bucket, in another region), and the
STS step's request (botocore's Stubber: the local S3 server is the only AWS endpoint the tests have)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.stub import Stubber

from export_core.destinations import PermanentDeliveryError, RetryableDeliveryError
from export_core.destinations.s3 import (
    ROLE_SESSION_NAME,
    ROLE_SESSION_SECONDS,
    S3Target,
    assume_role,
    check_writable,
    file_checksums,
    partner_client,
    upload,
    verify_stored,
)
from tests.conftest import free_port
from tests.partner_bucket import PARTNER_REGION, partner_bucket_fixture  # noqa: F401 (the fixture)

REGION = PARTNER_REGION
MiB = 1024 * 1024
# Multipart from 1 MiB: boto3 then sends parts of S3's smallest part size, 5 MiB.
SMALL_MULTIPART = TransferConfig(multipart_threshold=MiB, multipart_chunksize=MiB, max_concurrency=2)
ROLE = "arn:aws:iam::210987654321:role/export-service-delivery"


def client_for(target: S3Target, s3_endpoint: str) -> Any:
    return partner_client(target, endpoint_url=s3_endpoint, local_credentials=True)


def sent_headers(client: Any) -> list[dict[str, str]]:
    """The headers of every request `client` sends from now on, as sent (names in lower case)."""
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    client.meta.events.register("before-send.s3", record)
    return sent


def objects(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_file_lands_under_the_prefix_with_the_owner_acl_and_its_checksum(
    s3_endpoint: str, partner_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "export.zip"
    source.write_bytes(os.urandom(200_000))
    target = S3Target(partner_bucket, "incoming/exports/", REGION)
    client = client_for(target, s3_endpoint)
    sent = sent_headers(client)
    delivered = upload(client, target, source, name="export.zip")
    assert delivered.remote_path == f"s3://{partner_bucket}/incoming/exports/export.zip"
    assert delivered.bytes == 200_000 and delivered.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    stored = client.get_object(Bucket=partner_bucket, Key="incoming/exports/export.zip")
    assert stored["Body"].read() == source.read_bytes()
    assert stored["Metadata"] == {"sha256": delivered.sha256}
    put = next(h for h in sent if "x-amz-acl" in h)
    assert put["x-amz-acl"] == "bucket-owner-full-control"
    assert "x-amz-checksum-sha256" in put or put.get("x-amz-trailer") == "x-amz-checksum-sha256"


def test_acl_none_sends_no_acl_and_re_delivery_replaces(s3_endpoint: str, partner_bucket: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first\n")
    second.write_bytes(b"second\n")
    target = S3Target(partner_bucket, "", REGION, acl="none")
    client = client_for(target, s3_endpoint)
    sent = sent_headers(client)
    upload(client, target, first, name="data.csv")
    upload(client, target, second, name="data.csv")
    assert not any("x-amz-acl" in h for h in sent)
    assert client.get_object(Bucket=partner_bucket, Key="data.csv")["Body"].read() == b"second\n"
    assert objects(client, partner_bucket) == ["data.csv"]


def test_a_large_file_goes_up_in_parts_and_its_composite_checksum_is_checked(
    s3_endpoint: str, partner_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.csv"
    source.write_bytes(os.urandom(11 * MiB + 7))
    target = S3Target(partner_bucket, "big", REGION)
    client = client_for(target, s3_endpoint)
    delivered = upload(client, target, source, name="big.csv", config=SMALL_MULTIPART)
    head = client.head_object(Bucket=partner_bucket, Key="big/big.csv", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')  # three parts: 5 MiB, 5 MiB and the rest
    assert head["ContentLength"] == source.stat().st_size == delivered.bytes
    assert head["ChecksumSHA256"].partition("-")[0] == file_checksums(source, 5 * MiB).stored
    body = client.get_object(Bucket=partner_bucket, Key="big/big.csv")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == delivered.sha256


def test_an_object_that_is_not_what_was_sent_is_a_permanent_error(
    s3_endpoint: str, partner_bucket: str, tmp_path: Path
) -> None:
    """Another writer replaced the object between the upload and the check (with and without a stored checksum)."""
    source = tmp_path / "f.csv"
    source.write_bytes(b"ours\n")
    target = S3Target(partner_bucket, "", REGION)
    client = client_for(target, s3_endpoint)
    expected = file_checksums(source, None)
    client.put_object(Bucket=partner_bucket, Key="f.csv", Body=b"ours\n", ChecksumAlgorithm="SHA256")
    verify_stored(client, target, "f.csv", expected)
    client.put_object(Bucket=partner_bucket, Key="f.csv", Body=b"theirs\n", ChecksumAlgorithm="SHA256")
    with pytest.raises(PermanentDeliveryError) as raised:
        verify_stored(client, target, "f.csv", expected)
    assert str(raised.value) == f"The object S3 stored as s3://{partner_bucket}/f.csv is not the file that was sent."
    # Without a SHA-256 kept by the server (botocore's default checksum is CRC32), the object is read back.
    client.put_object(Bucket=partner_bucket, Key="f.csv", Body=b"ours\n")
    assert "ChecksumSHA256" not in client.head_object(Bucket=partner_bucket, Key="f.csv", ChecksumMode="ENABLED")
    verify_stored(client, target, "f.csv", expected)
    client.put_object(Bucket=partner_bucket, Key="f.csv", Body=b"theirs\n")
    with pytest.raises(PermanentDeliveryError, match="is not the file that was sent"):
        verify_stored(client, target, "f.csv", expected)


def test_a_missing_bucket_is_permanent_and_an_unreachable_s3_retryable(s3_endpoint: str, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    target = S3Target(f"missing-{uuid.uuid4().hex[:8]}", "p", REGION)
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(client_for(target, s3_endpoint), target, source, name="f")
    assert str(raised.value) == f"S3 refused to store s3://{target.bucket}/p/f (NoSuchBucket)."
    down = boto3.client(
        "s3", region_name=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}", aws_access_key_id="local",
        aws_secret_access_key="local", config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )  # fmt: skip
    with pytest.raises(RetryableDeliveryError, match=f"^Could not reach S3 to store s3://{target.bucket}/p/f"):
        upload(down, target, source, name="f")


def test_check_writable_writes_and_removes_a_test_object(s3_endpoint: str, partner_bucket: str) -> None:
    target = S3Target(partner_bucket, "/drop/", REGION)
    client = client_for(target, s3_endpoint)
    assert check_writable(client, target) == f"Wrote and removed a test object under s3://{partner_bucket}/drop/."
    assert objects(client, partner_bucket) == []
    missing = S3Target("no-such-partner-bucket", "", REGION)
    with pytest.raises(
        PermanentDeliveryError, match=r"^S3 refused to write and remove a test object .*\(NoSuchBucket\)"
    ):
        check_writable(client_for(missing, s3_endpoint), missing)


def stubbed_sts() -> tuple[Any, Stubber]:
    sts = boto3.client("sts", region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local")
    return sts, Stubber(sts)


ASSUMED = {
    "Credentials": {
        "AccessKeyId": "ASIAPARTNERROLE00001",
        "SecretAccessKey": "partner-role-secret",
        "SessionToken": "partner-role-session-token",
        "Expiration": "2030-01-01T00:00:00Z",
    }
}


def test_the_role_is_assumed_with_its_external_id() -> None:
    sts, stub = stubbed_sts()
    expected = {
        "RoleArn": ROLE,
        "RoleSessionName": ROLE_SESSION_NAME,
        "DurationSeconds": ROLE_SESSION_SECONDS,
        "ExternalId": "partner-external-id",
    }
    stub.add_response("assume_role", ASSUMED, expected)
    with stub:
        credentials = assume_role(sts, S3Target("b", "", REGION, role_arn=ROLE, external_id="partner-external-id"))
    assert credentials == {
        "aws_access_key_id": "ASIAPARTNERROLE00001",
        "aws_secret_access_key": "partner-role-secret",
        "aws_session_token": "partner-role-session-token",
    }
    stub.assert_no_pending_responses()


def test_a_refused_role_is_permanent_and_sts_trouble_retryable() -> None:
    sts, stub = stubbed_sts()
    stub.add_client_error("assume_role", service_error_code="AccessDenied", http_status_code=403)
    stub.add_client_error("assume_role", service_error_code="InternalFailure", http_status_code=500)
    target = S3Target("b", "", REGION, role_arn=ROLE, external_id="partner-external-id")
    with stub:
        with pytest.raises(PermanentDeliveryError) as refused:
            assume_role(sts, target)
        with pytest.raises(RetryableDeliveryError):
            assume_role(sts, target)
    assert str(refused.value) == (
        f"AWS STS refused to assume the role {ROLE} (AccessDenied); its trust policy must allow this service with"
        " the destination's external id."
    )
    assert "partner-external-id" not in str(refused.value) and "partner-external-id" not in repr(target)


def test_a_delivery_with_a_role_uses_the_assumed_credentials(
    s3_endpoint: str, partner_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"through the role\n")
    sts, stub = stubbed_sts()
    stub.add_response("assume_role", ASSUMED)
    target = S3Target(partner_bucket, "", REGION, role_arn=ROLE)
    with stub:
        client = partner_client(target, endpoint_url=s3_endpoint, sts=sts)
    sent = sent_headers(client)
    upload(client, target, source, name="f")
    assert all("Credential=ASIAPARTNERROLE00001/" in h["authorization"] for h in sent)
    assert all(h["x-amz-security-token"] == "partner-role-session-token" for h in sent)


def test_targets_refuse_unknown_acls_and_an_external_id_without_a_role() -> None:
    with pytest.raises(ValueError, match="^acl must be one of"):
        S3Target("b", "", REGION, acl="public-read")
    with pytest.raises(ValueError, match="^externalId needs a roleArn"):
        S3Target("b", "", REGION, external_id="x")
    assert S3Target("b", "", REGION).key("f") == "f" and S3Target("b", "/a/b/", REGION).key("f") == "a/b/f"
