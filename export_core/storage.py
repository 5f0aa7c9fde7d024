"""S3 operations the service needs: atomic upload (ACL and encryption as configured), presign, delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# Multipart above 16 MB: S3 only shows the object once CompleteMultipartUpload succeeds, and
# boto3 aborts the multipart upload when a part fails, so no partial object ever appears.
MULTIPART_BYTES = 16 * 1024 * 1024  # files from this size go up in parts of this size, 4 at a time


@cache
def transfer_config() -> Any:
    """boto3's transfer settings, built on the first upload (boto3 is imported by the steps that
    use it, not when the code location loads: docs/performance.md, the queue)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, max_concurrency=4)


@dataclass(frozen=True)
class UploadedObject:
    bucket: str
    key: str
    bytes: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def object_acl(mode: str, type_acl: str) -> str | None:
    """The canned ACL an upload sends under S3_OBJECT_ACL: the type's own, or none at all.

    Buckets created since April 2023 have ACLs disabled ("bucket owner enforced") and refuse
    any PUT that carries an ACL, even `private`; there, mode "none" leaves access to the
    bucket policy.
    """
    if mode == "per-type":
        return type_acl
    if mode == "none":
        return None
    raise ValueError(f"S3_OBJECT_ACL must be 'per-type' or 'none', got {mode!r}")


def upload_extra_args(
    *,
    acl: str | None,
    content_type: str,
    checksum: str,
    content_disposition: str | None = None,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
) -> dict[str, Any]:
    """boto3 ExtraArgs of one upload; only what is configured is sent (no ACL header when acl is None).

    A Content-Disposition set here is stored with the object and sent with every GET of it, by AWS
    and by the local S3 servers alike (keys.content_disposition builds it).
    """
    if sse not in (None, "aws:kms", "AES256"):
        raise ValueError(f"S3_SSE must be 'aws:kms' or 'AES256', got {sse!r}")
    if sse_kms_key_id and sse != "aws:kms":
        raise ValueError("a KMS key id needs S3_SSE=aws:kms")
    extra: dict[str, Any] = {"ContentType": content_type, "Metadata": {"sha256": checksum}}
    if content_disposition is not None:
        extra["ContentDisposition"] = content_disposition
    if acl is not None:
        extra["ACL"] = acl
    if sse is not None:
        extra["ServerSideEncryption"] = sse
    if sse_kms_key_id:
        extra["SSEKMSKeyId"] = sse_kms_key_id
    return extra


def upload_file(
    s3: Any,
    path: Path,
    *,
    bucket: str,
    key: str,
    acl: str | None,
    content_type: str,
    content_disposition: str | None = None,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
) -> UploadedObject:
    """Upload `path` to bucket/key with the given ACL (None: no ACL sent), server-side encryption
    and, when given, the Content-Disposition downloads are served with.

    Multipart uploads left over for this key (an earlier attempt that lost S3 midway and
    could not abort) are aborted first, so storage never keeps orphaned parts. With
    multipart, boto3 sends the ACL and encryption on CreateMultipartUpload, so they apply
    to large files too.
    """
    checksum = sha256_of(path)
    extra = upload_extra_args(
        acl=acl,
        content_type=content_type,
        checksum=checksum,
        content_disposition=content_disposition,
        sse=sse,
        sse_kms_key_id=sse_kms_key_id,
    )
    abort_incomplete_uploads(s3, bucket=bucket, key=key)
    s3.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=transfer_config())
    return UploadedObject(bucket=bucket, key=key, bytes=path.stat().st_size, sha256=checksum)


def abort_incomplete_uploads(s3: Any, *, bucket: str, key: str) -> int:
    """Abort every unfinished multipart upload of exactly this key; returns how many.

    A server that cannot list multipart uploads (the local stack's s3rver answers NotImplemented)
    shows none, so there is nothing to abort and the upload goes ahead; AWS always lists them.
    """
    from botocore.exceptions import ClientError

    aborted = 0
    try:
        listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NotImplemented":
            raise
        return 0
    for upload in listing.get("Uploads", []):
        if upload["Key"] == key:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            aborted += 1
    return aborted


# S3 DeleteObjects takes at most this many keys per call.
DELETE_BATCH = 1000


class S3DeleteError(Exception):
    """Some keys could not be deleted; `deleted` lists those S3 confirmed before the failure."""

    def __init__(self, message: str, deleted: list[str]) -> None:
        super().__init__(message)
        self.deleted = deleted


def delete_objects(s3: Any, *, bucket: str, keys: list[str]) -> list[str]:
    """Delete `keys` from `bucket`, 1,000 per call; returns the keys deleted.

    A key that is already gone counts as deleted (S3 semantics), so a repeated call is a
    no-op. Any failure raises S3DeleteError carrying the keys deleted until then.
    """
    deleted: list[str] = []
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), DELETE_BATCH):
        chunk = unique[start : start + DELETE_BATCH]
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        except Exception as exc:
            raise S3DeleteError(f"S3 DeleteObjects on bucket {bucket!r} failed: {exc}", deleted) from exc
        errors = response.get("Errors") or []
        failed = {e.get("Key") for e in errors}
        deleted += [k for k in chunk if k not in failed]
        if errors:
            first = errors[0]
            raise S3DeleteError(
                f"S3 refused to delete {len(errors)} key(s) in bucket {bucket!r}: "
                f"{first.get('Code')}: {first.get('Message')}",
                deleted,
            )
    return deleted


def list_keys(s3: Any, *, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix` (all pages)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys
