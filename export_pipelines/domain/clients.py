"""Factories for the MongoDB and S3 clients, so every process connects the same way."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from pymongo import MongoClient

from export_pipelines.domain.settings import Settings


def mongo_client(settings: Settings, **kwargs: Any) -> MongoClient:
    return MongoClient(settings.mongodb_uri, tz_aware=True, **kwargs)


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client; against a local endpoint, dummy credentials stand in for AWS ones."""
    extra: dict[str, Any] = {}
    if settings.s3_endpoint_url:
        extra["endpoint_url"] = settings.s3_endpoint_url
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            extra["aws_access_key_id"] = "local"
            extra["aws_secret_access_key"] = "local"  # noqa: S105 - moto accepts any
    return boto3.client(
        "s3",
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        **extra,
    )


def ensure_buckets(settings: Settings) -> None:
    """Create the four buckets if missing (local stack and tests only; production owns its buckets)."""
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in settings.all_buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
