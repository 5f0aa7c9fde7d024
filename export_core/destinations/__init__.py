"""Destinations (SPEC §13): pushing a finished export's file to a partner's SFTP server or S3 bucket.

Dagster-free and synchronous, for the delivery runs and the API's test endpoint: `sftp` and `s3`
send a local file, `pgp` encrypts one first. A delivery returns `Delivered` or raises one of the two errors
below, whose message is one plain sentence fit for the deliveries endpoint: it may name the host, the port,
the folder or the bucket, never a password, a private key, a passphrase or a user name.

The transports are imported from their modules (`export_core.destinations.sftp`, …), so a process that
loads this package for the errors does not load paramiko, boto3 or python-gnupg.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivered:
    """What a destination received: where, how many bytes, and the sha256 (hex) of exactly those bytes."""

    remote_path: str  # the SFTP path, or s3://bucket/key
    bytes: int
    sha256: str


class DeliveryError(Exception):
    """A delivery that did not happen; the message says why in one sentence, without secrets."""


class RetryableDeliveryError(DeliveryError):
    """The destination could not be reached or dropped the transfer (refused, timed out, lost): try later."""


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help until the destination or its server changes (host key, login, permission)."""
