"""Factories for the MongoDB and S3 clients, so every process connects the same way."""

from __future__ import annotations

import os
import socket
from typing import Any

from pymongo import MongoClient, monitoring

from export_core.settings import Settings


def mongo_client(settings: Settings, **kwargs: Any) -> MongoClient:
    return MongoClient(settings.mongodb_uri, tz_aware=True, **kwargs)


def s3_client(settings: Settings) -> Any:
    return new_s3_client(
        settings.s3_endpoint_url, settings.aws_region, local_credentials=local_s3_credentials(settings)
    )


def local_s3_credentials(settings: Settings) -> bool:
    """Whether S3 clients sign with dummy credentials: a local endpoint and no AWS_ACCESS_KEY_ID."""
    return settings.s3_endpoint_url is not None and not settings.aws_access_key_id


def s3_config(endpoint_url: str | None) -> Any:
    """How every S3 client signs and addresses: Signature Version 4, the region's own endpoint.

    boto3 1.44 presigns with SigV2 unless told `s3v4`, and S3 refuses SigV2 on buckets created
    since mid-2020. Without `addressing_style="virtual"` a presigned URL of a bucket outside
    us-east-1 points at the global host `bucket.s3.amazonaws.com` (which redirects a new bucket,
    breaking the signature), and `us_east_1_regional_endpoint="regional"` gives us-east-1
    `s3.us-east-1.amazonaws.com` too; botocore falls back to path style for bucket names with
    dots. A local endpoint (S3_ENDPOINT_URL) is addressed path-style: `bucket.localhost` may not
    resolve.
    """
    from botocore.config import Config

    addressing = {"addressing_style": "path"} if endpoint_url else {"addressing_style": "virtual"}
    return Config(
        signature_version="s3v4",
        s3={**addressing, "us_east_1_regional_endpoint": "regional"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )


def new_s3_client(endpoint_url: str | None, region: str, *, local_credentials: bool = False) -> Any:
    """A boto3 S3 client for the buckets' region (s3_config); with `local_credentials` (a local
    endpoint, no AWS ones configured: local_s3_credentials) dummy credentials stand in for AWS ones.

    boto3 is imported here, by the first client, not when the code location loads (0.06 s of a
    run worker's start-up before its export is TRIGGERED: docs/performance.md, the queue)."""
    import boto3

    extra: dict[str, Any] = {}
    if endpoint_url:
        extra["endpoint_url"] = endpoint_url
    if local_credentials:
        extra["aws_access_key_id"] = "local"
        extra["aws_secret_access_key"] = "local"  # noqa: S105 - moto accepts any
    return boto3.client("s3", region_name=region, config=s3_config(endpoint_url), **extra)


def ensure_buckets(settings: Settings) -> None:
    """Create the four buckets if missing (local stack and tests only; production owns its buckets)."""
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in settings.all_buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends: each is one round trip to the server (a getMore too)."""

    def __init__(self) -> None:
        self.commands = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in Linux's struct tcp_info


def bytes_received_from(port: int) -> int | None:
    """Bytes this process has received on its open TCP connections to `port` (Linux; None elsewhere).

    What the database sent us, read from the kernel's counters of the pool's sockets, so it costs
    nothing on the hot path; connections already closed are not counted.
    """
    if not hasattr(socket, "TCP_INFO"):
        return None
    import psutil  # here, not at import: every run worker loads this module, few call this

    total = 0
    for conn in psutil.Process().net_connections(kind="tcp"):
        if not conn.raddr or conn.raddr.port != port or conn.fd < 0:
            continue
        with socket.socket(fileno=os.dup(conn.fd)) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) >= _TCP_INFO_BYTES_RECEIVED + 8:
            total += int.from_bytes(info[_TCP_INFO_BYTES_RECEIVED : _TCP_INFO_BYTES_RECEIVED + 8], "little")
    return total
