"""S3 destinations (SPEC §13): a partner's bucket, with the service's credentials or a role assumed per delivery.

A delivery is three steps, each a function the caller strings together (`partner_client`, then `upload`):
1. credentials: with `roleArn` (+ `externalId`), STS AssumeRole into the partner's account for this
   delivery only (`assume_role`); without, the service's own credentials;
2. the upload (boto3's managed transfer: multipart from the TransferConfig's threshold), with a SHA-256
   checksum that S3 checks on every request (each part of a multipart upload), the canned ACL
   `bucket-owner-full-control` unless the destination says `none` (buckets whose owner enforces
   ownership refuse any ACL), and the file's sha256 in the object's metadata for the partner;
3. the check: the object's SHA-256 as S3 shows it (ChecksumMode) must be the file's — for a multipart
   upload S3 keeps the checksum of the parts' checksums, which is computed here from the same part size
   boto3 uses. A server that keeps no SHA-256 (the local stack's s3rver) has the object read back and
   hashed instead. A mismatch is a PermanentDeliveryError. Reading the object's head needs s3:GetObject.

Errors: RetryableDeliveryError for what may pass (no connection, timeouts, 5xx, throttling, an expired
session token); PermanentDeliveryError for the rest (no such bucket, access denied, an ACL the bucket
refuses, a role that cannot be assumed). Messages name the bucket, key and S3's error code, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export_core.clients import s3_config
from export_core.destinations import Delivered, PermanentDeliveryError, RetryableDeliveryError
from export_core.storage import transfer_config
from export_core.vocabulary import S3_ACLS as ACLS

ROLE_SESSION_NAME = "export-service-delivery"
ROLE_SESSION_SECONDS = 3600  # IAM roles allow an hour unless their owner set more; an upload must end within it
# S3 error codes that may pass by themselves; any other 4xx needs the destination or the bucket to change.
RETRYABLE_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "TokenRefreshRequired",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
    }
)
BLOCK = 1024 * 1024


@dataclass(frozen=True)
class S3Target:
    """A partner's bucket and the folder (`prefix`) files go to; `role_arn`/`external_id` for STS."""

    bucket: str
    prefix: str
    region: str
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    acl: str = "bucket-owner-full-control"

    def __post_init__(self) -> None:
        if self.acl not in ACLS:
            raise ValueError(f"acl must be one of: {', '.join(ACLS)}.")
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("externalId needs a roleArn.")

    def key(self, name: str) -> str:
        """`prefix` is a folder: `exports` and `exports/` both give `exports/{name}`."""
        folder = self.prefix.strip("/")
        return f"{folder}/{name}" if folder else name

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _error_code(exc: Exception) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "error")
    return code, response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def classify(exc: BaseException, doing: str) -> RetryableDeliveryError | PermanentDeliveryError:
    """The delivery error of a boto3/botocore failure while `doing` (e.g. "store s3://b/k")."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotocoreConnectionError

    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        if code in RETRYABLE_CODES or status is None or status >= 500 or status in (408, 429):
            return RetryableDeliveryError(f"S3 could not {doing} for now ({code}).")
        return PermanentDeliveryError(f"S3 refused to {doing} ({code}).")
    if isinstance(exc, BotocoreConnectionError | HTTPClientError):  # refused, timed out, dropped
        return RetryableDeliveryError(f"Could not reach S3 to {doing}.")
    return PermanentDeliveryError(f"Could not {doing} ({type(exc).__name__}).")


def assume_role(sts: Any, target: S3Target, *, session_name: str = ROLE_SESSION_NAME) -> dict[str, str]:
    """Temporary credentials of the destination's role (STS AssumeRole, with its external id), as client kwargs."""
    from botocore.exceptions import BotoCoreError, ClientError

    request: dict[str, Any] = {
        "RoleArn": target.role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": ROLE_SESSION_SECONDS,
    }
    if target.external_id is not None:
        request["ExternalId"] = target.external_id
    try:
        credentials = sts.assume_role(**request)["Credentials"]
    except ClientError as exc:
        code, status = _error_code(exc)
        if code in RETRYABLE_CODES or status is None or status >= 500:
            raise RetryableDeliveryError(
                f"AWS STS could not assume the role {target.role_arn} for now ({code})."
            ) from exc
        raise PermanentDeliveryError(
            f"AWS STS refused to assume the role {target.role_arn} ({code}); its trust policy must allow this"
            " service with the destination's external id."
        ) from exc
    except BotoCoreError as exc:
        raise RetryableDeliveryError(f"Could not reach AWS STS to assume the role {target.role_arn}.") from exc
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


def partner_client(
    target: S3Target, *, endpoint_url: str | None = None, local_credentials: bool = False, sts: Any = None
) -> Any:
    """An S3 client for the destination's bucket and region: the role's credentials (assumed now, through
    `sts` or a new STS client of the bucket's region) when it has a role, else the service's own (dummy ones
    with `local_credentials`, as export_core.clients does for a local endpoint)."""
    import boto3

    credentials: dict[str, str] = {}
    if target.role_arn is not None:
        credentials = assume_role(sts or boto3.client("sts", region_name=target.region), target)
    elif local_credentials:
        credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    extra: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return boto3.client("s3", region_name=target.region, config=s3_config(endpoint_url), **extra, **credentials)


@dataclass(frozen=True)
class Checksums:
    sha256: str  # hex, of the whole file
    stored: str  # the SHA-256 S3 shows for the object: base64 of the file's, or of its parts' digests
    parts: int  # 1 for a single PUT


def file_checksums(path: Path, part_size: int | None) -> Checksums:
    """The file's sha256 and, read in the same pass, what S3 will show for it uploaded in `part_size` parts
    (None: in one PUT)."""
    whole, part_digests = hashlib.sha256(), []
    part, in_part = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(min(BLOCK, part_size - in_part) if part_size else BLOCK):
            whole.update(block)
            part.update(block)
            in_part += len(block)
            if part_size and in_part == part_size:
                part_digests.append(part.digest())
                part, in_part = hashlib.sha256(), 0
    if part_size is None:
        return Checksums(whole.hexdigest(), base64.b64encode(whole.digest()).decode(), 1)
    if in_part or not part_digests:
        part_digests.append(part.digest())
    composite = hashlib.sha256(b"".join(part_digests)).digest()
    return Checksums(whole.hexdigest(), base64.b64encode(composite).decode(), len(part_digests))


def upload_part_size(config: Any, size: int) -> int | None:
    """The part size boto3's managed upload will use for a file of `size` bytes (None: a single PUT)."""
    from s3transfer.utils import ChunksizeAdjuster

    if size < config.multipart_threshold:
        return None
    return int(ChunksizeAdjuster().adjust_chunksize(config.multipart_chunksize, size))


def verify_stored(client: Any, target: S3Target, key: str, expected: Checksums) -> None:
    """PermanentDeliveryError unless the object under `key` is the file `expected` describes."""
    from botocore.exceptions import BotoCoreError, ClientError

    url = target.url(key)
    try:
        head = client.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
        stored = head.get("ChecksumSHA256")
        if stored is None:  # a server that keeps no checksums: read it back
            digest = hashlib.sha256()
            body = client.get_object(Bucket=target.bucket, Key=key)["Body"]
            for block in iter(lambda: body.read(BLOCK), b""):
                digest.update(block)
            matches = digest.hexdigest() == expected.sha256
        else:  # AWS writes a multipart object's as `base64-N`
            value, _, count = str(stored).partition("-")
            matches = value == expected.stored and count in ("", str(expected.parts))
    except (BotoCoreError, ClientError) as exc:
        raise classify(exc, f"show the uploaded object {url}") from exc
    if not matches:
        raise PermanentDeliveryError(f"The object S3 stored as {url} is not the file that was sent.")


class TransferTooSlow(RetryableDeliveryError):
    """A transfer that had not ended by its deadline."""


def stop_after(deadline: float | None, message: str) -> Any:
    """A boto3 transfer Callback that stops the transfer (TransferTooSlow, `message`) once `deadline`
    (time.monotonic()) has passed."""

    def progress(_: int) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TransferTooSlow(message)

    return progress


def upload(
    client: Any, target: S3Target, local: Path, *, name: str, config: Any = None, deadline: float | None = None
) -> Delivered:
    """Upload `local` as `{prefix}/{name}` (replacing an earlier delivery) and check what S3 stored.

    `config`: boto3's TransferConfig, the service's own (export_core.storage) unless given. Past `deadline`
    (time.monotonic()) the transfer is stopped (boto3 aborts a multipart upload), a RetryableDeliveryError.
    """
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    config = config or transfer_config()
    key, size = target.key(name), local.stat().st_size
    expected = file_checksums(local, upload_part_size(config, size))
    extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": expected.sha256}}
    if target.acl != "none":
        extra["ACL"] = target.acl
    stop = stop_after(deadline, f"S3 did not take {target.url(key)} within the time one delivery attempt has.")
    try:
        client.upload_file(str(local), target.bucket, key, ExtraArgs=extra, Config=config, Callback=stop)
    except TransferTooSlow:
        raise
    except S3UploadFailedError as exc:  # boto3 wraps the ClientError it caught
        cause = exc.__context__ if isinstance(exc.__context__, ClientError) else exc
        raise classify(cause, f"store {target.url(key)}") from exc
    except (BotoCoreError, ClientError) as exc:
        raise classify(exc, f"store {target.url(key)}") from exc
    verify_stored(client, target, key, expected)
    return Delivered(remote_path=target.url(key), bytes=size, sha256=expected.sha256)


def check_writable(client: Any, target: S3Target) -> str:
    """The destination test (SPEC §13): write a small object under the prefix (with the ACL) and remove it."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = target.key(f".export-service-check-{secrets.token_hex(8)}")
    acl = {"ACL": target.acl} if target.acl != "none" else {}
    try:
        client.put_object(Bucket=target.bucket, Key=key, Body=b"export-service write check\n", **acl)
        client.delete_object(Bucket=target.bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise classify(exc, f"write and remove a test object {target.url(key)}") from exc
    return f"Wrote and removed a test object under {target.url(target.key(''))}."
