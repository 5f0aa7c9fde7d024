"""Reaching a destination (SPEC §13): the transports' targets built from a stored destination and its secrets.

Dagster-free and synchronous, for the API's test endpoint and the delivery sensor's threads. A `Reach` holds
what every connection needs from the service's settings: whether private SFTP hosts are allowed
(WEBHOOK_ALLOW_PRIVATE) and where S3 is (S3_ENDPOINT_URL: the local stack's server serves partner buckets
too; unset in production, real AWS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from export_core.clients import local_s3_credentials
from export_core.destination_store import S3
from export_core.destinations import s3 as s3_transport
from export_core.destinations import sftp
from export_core.settings import Settings


@dataclass(frozen=True)
class Reach:
    allow_private: bool
    s3_endpoint_url: str | None
    local_credentials: bool

    @classmethod
    def of(cls, settings: Settings) -> Reach:
        return cls(settings.webhook_allow_private, settings.s3_endpoint_url, local_s3_credentials(settings))


def sftp_target(destination: dict[str, Any], secrets: dict[str, str]) -> sftp.SftpTarget:
    """An sftp or sfmc destination's login: its password, or the private key the service generated for it."""
    return sftp.SftpTarget(
        host=str(destination["host"]),
        port=int(destination["port"]),
        username=str(destination["username"]),
        host_key=str(destination["hostKey"]),
        password=secrets.get("password"),
        private_key=secrets.get("privateKey"),
    )


def s3_target(destination: dict[str, Any]) -> s3_transport.S3Target:
    return s3_transport.S3Target(
        bucket=str(destination["bucket"]),
        prefix=str(destination.get("prefix") or ""),
        region=str(destination["region"]),
        role_arn=destination.get("roleArn"),
        external_id=destination.get("externalId"),
        acl=str(destination.get("acl") or s3_transport.ACLS[0]),
    )


def s3_client(destination: dict[str, Any], reach: Reach) -> Any:
    """A client for the partner's bucket (the role assumed now, when the destination has one)."""
    return s3_transport.partner_client(
        s3_target(destination), endpoint_url=reach.s3_endpoint_url, local_credentials=reach.local_credentials
    )


def check(destination: dict[str, Any], secrets: dict[str, str], reach: Reach) -> str:
    """The destination test: connect (host key, login, role) and write and remove a small file; a sentence
    saying what was checked, or a DeliveryError saying what failed (one sentence, no secret)."""
    if destination["type"] == S3:
        return s3_transport.check_writable(s3_client(destination, reach), s3_target(destination))
    return sftp.check_writable(
        sftp_target(destination, secrets), str(destination.get("path") or ""), allow_private=reach.allow_private
    )
