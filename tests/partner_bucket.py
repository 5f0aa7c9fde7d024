"""A partner's S3 bucket for the destination tests: a bucket of its own on the suite's S3 server, in another region
than the service's buckets, emptied and removed after the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from export_core.destinations.s3 import S3Target, partner_client

PARTNER_REGION = "eu-west-1"


@pytest.fixture(name="partner_bucket")
def partner_bucket_fixture(s3_endpoint: str) -> Iterator[str]:
    """The bucket's name; import the fixture into a test module (or a conftest) to use it."""
    client = partner_client(S3Target("unused", "", PARTNER_REGION), endpoint_url=s3_endpoint, local_credentials=True)
    name = f"partner-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": PARTNER_REGION})
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)
