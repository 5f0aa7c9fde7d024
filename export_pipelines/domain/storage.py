"""S3 operations the service needs: atomic upload with an ACL, presign, delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

# Multipart above 16 MB: S3 only shows the object once CompleteMultipartUpload succeeds, and
# boto3 aborts the multipart upload when a part fails, so no partial object ever appears.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=4
)


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


def upload_file(s3: Any, path: Path, *, bucket: str, key: str, acl: str, content_type: str) -> UploadedObject:
    """Upload `path` to bucket/key with the export type's ACL.

    Multipart uploads left over for this key (an earlier attempt that lost S3 midway and
    could not abort) are aborted first, so storage never keeps orphaned parts.
    """
    abort_incomplete_uploads(s3, bucket=bucket, key=key)
    checksum = sha256_of(path)
    s3.upload_file(
        str(path),
        bucket,
        key,
        ExtraArgs={"ACL": acl, "ContentType": content_type, "Metadata": {"sha256": checksum}},
        Config=TRANSFER_CONFIG,
    )
    return UploadedObject(bucket=bucket, key=key, bytes=path.stat().st_size, sha256=checksum)


def abort_incomplete_uploads(s3: Any, *, bucket: str, key: str) -> int:
    """Abort every unfinished multipart upload of exactly this key; returns how many."""
    aborted = 0
    listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in listing.get("Uploads", []):
        if upload["Key"] == key:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            aborted += 1
    return aborted
