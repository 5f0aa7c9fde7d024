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
    """Upload `path` to bucket/key with the export type's ACL."""
    checksum = sha256_of(path)
    s3.upload_file(
        str(path),
        bucket,
        key,
        ExtraArgs={"ACL": acl, "ContentType": content_type, "Metadata": {"sha256": checksum}},
        Config=TRANSFER_CONFIG,
    )
    return UploadedObject(bucket=bucket, key=key, bytes=path.stat().st_size, sha256=checksum)
