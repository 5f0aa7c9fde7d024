"""Uploads (export_core/storage.py) against the local S3 server: the ACL and encryption sent, what S3 keeps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from export_core.keys import content_disposition
from export_core.settings import Settings
from export_core.storage import MULTIPART_BYTES, object_acl, upload_file

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


class SentHeaders:
    """Headers of every request the client puts on the wire (botocore's before-send hook)."""

    def __init__(self, s3: Any) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        s3.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.requests.append((request.method, request.url, headers))

    def writes(self) -> list[dict[str, str]]:
        """Headers of the requests that create an object (PutObject or CreateMultipartUpload)."""
        return [h for m, url, h in self.requests if (m == "PUT" and "uploadId=" not in url) or url.endswith("?uploads")]


def _file(tmp_path: Path, size: int = 1024) -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(os.urandom(size))
    return path


def _public_read(s3: Any, bucket: str, key: str) -> bool:
    grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)


def test_object_acl_maps_the_setting_and_the_types_acl() -> None:
    assert object_acl("per-type", "private") == "private"
    assert object_acl("per-type", "public-read") == "public-read"
    assert object_acl("none", "public-read") is None
    with pytest.raises(ValueError, match="S3_OBJECT_ACL"):
        object_acl("off", "private")


def test_per_type_acl_is_sent_and_applied(s3: Any, settings: Settings, tmp_path: Path) -> None:
    sent = SentHeaders(s3)
    bucket = settings.exports_bucket
    upload_file(s3, _file(tmp_path), bucket=bucket, key="a/public.csv", acl="public-read", content_type="text/csv")
    upload_file(s3, _file(tmp_path), bucket=bucket, key="a/private.csv", acl="private", content_type="text/csv")
    assert [h.get("x-amz-acl") for h in sent.writes()] == ["public-read", "private"]
    assert _public_read(s3, bucket, "a/public.csv")
    assert not _public_read(s3, bucket, "a/private.csv")


def test_acl_none_sends_no_acl_header(s3: Any, settings: Settings, tmp_path: Path) -> None:
    """What a bucket with ACLs disabled needs: not even `x-amz-acl: private` may be sent."""
    sent = SentHeaders(s3)
    path = _file(tmp_path)
    uploaded = upload_file(s3, path, bucket=settings.exports_bucket, key="b/x.csv", acl=None, content_type="text/csv")
    writes = sent.writes()
    assert len(writes) == 1 and "x-amz-acl" not in writes[0]
    assert not any(k.startswith("x-amz-grant") for k in writes[0])
    assert s3.get_object(Bucket=settings.exports_bucket, Key="b/x.csv")["Body"].read() == path.read_bytes()
    assert uploaded.bytes == 1024


def test_kms_encryption_with_a_key_id(s3: Any, settings: Settings, tmp_path: Path) -> None:
    sent = SentHeaders(s3)
    bucket = settings.exports_bucket
    upload_file(
        s3, _file(tmp_path), bucket=bucket, key="c/k.csv", acl=None, content_type="text/csv",
        sse="aws:kms", sse_kms_key_id="alias/exports",
    )  # fmt: skip
    (headers,) = sent.writes()
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/exports"
    head = s3.head_object(Bucket=bucket, Key="c/k.csv")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == "alias/exports"


def test_aes256_applies_to_multipart_uploads_too(s3: Any, settings: Settings, tmp_path: Path) -> None:
    """Above the multipart threshold the encryption, ACL and Content-Disposition travel on CreateMultipartUpload."""
    sent = SentHeaders(s3)
    bucket = settings.exports_bucket
    path = _file(tmp_path, MULTIPART_BYTES + 1024)
    disposition = content_disposition("Beyoncé Tour 🎸 - Promoter Email Opt-In.zip")
    upload_file(
        s3, path, bucket=bucket, key="d/big.zip", acl="private", content_type="application/zip",
        content_disposition=disposition, sse="AES256",
    )  # fmt: skip
    (create,) = [h for m, url, h in sent.requests if url.endswith("?uploads")]
    assert create["x-amz-server-side-encryption"] == "AES256" and create["x-amz-acl"] == "private"
    assert create["content-disposition"] == disposition
    head = s3.head_object(Bucket=bucket, Key="d/big.zip")
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == path.stat().st_size
    assert head["ContentDisposition"] == disposition


def test_content_disposition_is_sent_only_when_given(s3: Any, settings: Settings, tmp_path: Path) -> None:
    sent = SentHeaders(s3)
    bucket = settings.exports_bucket
    disposition = content_disposition("Tour - Entries.csv")
    upload_file(s3, _file(tmp_path), bucket=bucket, key="g/x.csv", acl=None, content_type="t/c")
    upload_file(
        s3, _file(tmp_path), bucket=bucket, key="g/y.csv", acl=None, content_type="t/c", content_disposition=disposition
    )
    assert [h.get("content-disposition") for h in sent.writes()] == [None, disposition]
    assert "ContentDisposition" not in s3.head_object(Bucket=bucket, Key="g/x.csv")
    assert s3.get_object(Bucket=bucket, Key="g/y.csv")["ContentDisposition"] == disposition


def test_no_encryption_header_unless_configured(s3: Any, settings: Settings, tmp_path: Path) -> None:
    sent = SentHeaders(s3)
    upload_file(s3, _file(tmp_path), bucket=settings.exports_bucket, key="e/x.csv", acl="private", content_type="t/c")
    (headers,) = sent.writes()
    assert not any(k.startswith("x-amz-server-side-encryption") for k in headers)


@pytest.mark.parametrize(
    ("sse", "key_id", "message"),
    [("aws:kms2", None, "S3_SSE"), ("AES256", "k", "aws:kms")],
)
def test_bad_encryption_settings_fail_before_any_request(
    s3: Any, settings: Settings, tmp_path: Path, sse: str, key_id: str | None, message: str
) -> None:
    sent = SentHeaders(s3)
    with pytest.raises(ValueError, match=message):
        upload_file(
            s3, _file(tmp_path), bucket=settings.exports_bucket, key="f/x.csv", acl=None, content_type="t/c",
            sse=sse, sse_kms_key_id=key_id,
        )  # fmt: skip
    assert sent.requests == []


# -- the settings behind them (SPEC §8) ----------------------------------------------------


def test_settings_defaults(env: dict[str, str]) -> None:
    settings = Settings.from_env()
    assert settings.s3_object_acl == "per-type"
    assert settings.s3_sse is None and settings.s3_sse_kms_key_id is None
    assert settings.export_retention_days is None and settings.dagster_postgres_url is None


def test_settings_read_and_validated(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_OBJECT_ACL", "none")
    monkeypatch.setenv("S3_SSE", "aws:kms")
    monkeypatch.setenv("S3_SSE_KMS_KEY_ID", "arn:aws:kms:us-east-1:1:key/k")
    monkeypatch.setenv("EXPORT_RETENTION_DAYS", "30")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://u:secret@db:5432/dagster")
    settings = Settings.from_env()
    assert (settings.s3_object_acl, settings.s3_sse, settings.s3_sse_kms_key_id) == (
        "none", "aws:kms", "arn:aws:kms:us-east-1:1:key/k",
    )  # fmt: skip
    assert settings.export_retention_days == 30
    assert settings.dagster_postgres_url == "postgresql://u:secret@db:5432/dagster"
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("S3_OBJECT_ACL", "private", "S3_OBJECT_ACL must be one of per-type, none"),
        ("S3_SSE", "kms", "S3_SSE must be one of aws:kms, AES256"),
        ("S3_SSE_KMS_KEY_ID", "k", "S3_SSE is not aws:kms"),
        ("EXPORT_RETENTION_DAYS", "0", "at least 1"),
        ("EXPORT_RETENTION_DAYS", "30d", "must be an integer"),
        ("DAGSTER_POSTGRES_URL", "mysql://u:pw@h/db", "postgresql://user:password@host"),
    ],
)
def test_bad_settings_fail_with_the_variables_name(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message) as error:
        Settings.from_env()
    assert "pw" not in str(error.value)
