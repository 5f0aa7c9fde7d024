"""Reaching a destination and delivering an export to it (SPEC §13), with the transports of export_core/destinations.

Dagster-free and synchronous, for the API's test endpoint and the delivery runs. A `Reach` holds
what every connection needs from the service's settings: whether private SFTP hosts are allowed
(WEBHOOK_ALLOW_PRIVATE) and where S3 is (S3_ENDPOINT_URL: the local stack's server serves partner buckets
too; unset in production, real AWS).

A delivery (`deliver`) downloads the export's object(s) from our bucket into a scratch folder, checks them
against the sha256 the record keeps, takes the regional CSVs out of a reminder ZIP for Marketing Cloud,
encrypts to the destination's PGP key when it has one, and sends each file: over one SFTP session (renamed into
place; written directly for `sfmc`), or to the partner's bucket. The scratch folder goes whatever happens.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export_core.clients import local_s3_credentials
from export_core.destination_store import FILE_NAME_FIELDS
from export_core.destinations import Delivered, PermanentDeliveryError, RetryableDeliveryError, pgp, sftp
from export_core.destinations import s3 as s3_transport
from export_core.keys import safe_key_part
from export_core.settings import Settings
from export_core.storage import sha256_of
from export_core.vocabulary import DEFAULT_FILE_NAME, S3, SFMC


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


# -- one delivery -------------------------------------------------------------------------------------

# The extensions a delivered name's `{ext}` may be (the longest first: `csv.gz` is not `gz`).
EXTENSIONS = ("csv.gz", "csv", "parquet", "xlsx", "zip")
# SPEC §13: Marketing Cloud gets these types' regional CSV files under `{path}/{region}/`, not the ZIP.
REGIONAL_TYPES = ("reminderEmail", "autoReminderEmail")
PGP_SUFFIX = ".pgp"
BLOCK = 1024 * 1024


@dataclass(frozen=True)
class OutgoingFile:
    """One file a delivery sends: the export's object `key` (or `member`, a file inside that ZIP), the folder
    under the destination's path it goes to ("" or a region) and the name it is delivered under."""

    key: str
    member: str | None
    folder: str
    name: str


def split_name(file_name: str) -> tuple[str, str]:
    """(name, extension) of a file name: `Tour - Entries.csv.gz` → (`Tour - Entries`, `csv.gz`)."""
    for extension in EXTENSIONS:
        if file_name.lower().endswith(f".{extension}") and len(file_name) > len(extension) + 1:
            return file_name[: -len(extension) - 1], extension
    stem, dot, extension = file_name.rpartition(".")
    return (stem, extension) if dot and stem else (file_name, "")


def _placeholders(record: dict[str, Any], file_name: str) -> dict[str, str]:
    """A file's `fileName` placeholders; `{name}` leaves out the export id a key may end with (autoReminderEmail),
    so the default template does not repeat it."""
    export_id = str(record["_id"])
    name, extension = split_name(file_name)
    finished = (record.get("date") or {}).get("finished") or datetime.now(UTC)
    return {
        "name": name.removesuffix(f"_{safe_key_part(export_id)}"),
        "ext": extension,
        "exportId": safe_key_part(export_id),
        "exportType": str(record.get("exportType")),
        "campaignId": safe_key_part(str(record.get("campaignId"))),
        "date": finished.strftime("%Y%m%d"),
        "time": finished.strftime("%H%M%S"),
    }


def delivered_name(template: str | None, values: dict[str, str]) -> str:
    """The destination's `fileName` (DEFAULT_FILE_NAME without one) filled in; `ext` empty drops its dot."""
    name = (template or DEFAULT_FILE_NAME).format(**{field: values.get(field, "") for field in FILE_NAME_FIELDS})
    return name.removesuffix(".") if not values.get("ext") else name


def outgoing_files(record: dict[str, Any], destination: dict[str, Any]) -> list[OutgoingFile]:
    """What one export sends to one destination (SPEC §13): an `sfmc` destination gets a `reminderEmail` as the
    CSV files inside its ZIP and an `autoReminderEmail` as its CSVs, each under `{region}/`; everything else is
    the export's own file(s) in the destination's folder."""
    keys = record.get("key")
    keys = [keys] if isinstance(keys, str) else list(keys or [])
    files = [str(f["name"]) for f in (record.get("meta") or {}).get("files") or []]
    regional = destination["type"] == SFMC and record.get("exportType") in REGIONAL_TYPES

    def outgoing(key: str, member: str | None, folder: str, file_name: str) -> OutgoingFile:
        return OutgoingFile(
            key, member, folder, delivered_name(destination.get("fileName"), _placeholders(record, file_name))
        )

    if regional and record.get("exportType") == "reminderEmail":
        (key,) = keys  # the ZIP; its files are `{region}/{locale}_{n}.csv`
        return [outgoing(key, member, posixpath.dirname(member), posixpath.basename(member)) for member in files]
    if regional:  # autoReminderEmail: the i-th key is the i-th file, `{region}.csv` (both sorted by file)
        return [
            outgoing(key, None, split_name(region_file)[0], key.rpartition("/")[2])
            for key, region_file in zip(keys, files, strict=True)
        ]
    return [outgoing(key, None, "", key.rpartition("/")[2]) for key in keys]


def _fetch(s3: Any, bucket: str, key: str, local: Path, expected_sha256: str | None, deadline: float | None) -> None:
    """The export's object, downloaded and checked against the sha256 its record keeps."""
    from botocore.exceptions import BotoCoreError, ClientError

    too_slow = "The export's file could not be read from the service's storage within the time one attempt has."
    try:
        s3.download_file(bucket, key, str(local), Callback=s3_transport.stop_after(deadline, too_slow))
    except s3_transport.TransferTooSlow:
        raise
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
            raise PermanentDeliveryError("The export's file is no longer in storage; nothing was sent.") from exc
        raise RetryableDeliveryError("The export's file could not be read from the service's storage.") from exc
    except BotoCoreError as exc:
        raise RetryableDeliveryError("The export's file could not be read from the service's storage.") from exc
    if expected_sha256 is not None and sha256_of(local) != expected_sha256:
        raise PermanentDeliveryError("The export's file in storage is not the one it recorded; nothing was sent.")


def _stage(
    record: dict[str, Any], destination: dict[str, Any], s3: Any, bucket: str, scratch: Path, deadline: float | None
) -> list[tuple[OutgoingFile, Path]]:
    """Each outgoing file on local disk under `scratch`, encrypted (`.pgp` appended) when the destination
    has a PGP key."""
    recorded = {str(o["key"]): o.get("sha256") for o in (record.get("meta") or {}).get("objects") or []}
    fetched: dict[str, Path] = {}
    staged: list[tuple[OutgoingFile, Path]] = []
    for number, outgoing in enumerate(outgoing_files(record, destination)):
        if outgoing.key not in fetched:
            fetched[outgoing.key] = scratch / f"object-{len(fetched)}"
            _fetch(s3, bucket, outgoing.key, fetched[outgoing.key], recorded.get(outgoing.key), deadline)
        local = fetched[outgoing.key]
        if outgoing.member is not None:
            local = scratch / f"member-{number}"
            with (
                zipfile.ZipFile(fetched[outgoing.key]) as archive,
                archive.open(outgoing.member) as src,
                local.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, BLOCK)
        if destination.get("pgpPublicKey"):
            encrypted = scratch / f"encrypted-{number}"
            pgp.encrypt_file(local, encrypted, str(destination["pgpPublicKey"]))
            outgoing, local = replace(outgoing, name=outgoing.name + PGP_SUFFIX), encrypted
        staged.append((outgoing, local))
    return staged


def deliver(
    record: dict[str, Any],
    destination: dict[str, Any],
    secrets: dict[str, str],
    reach: Reach,
    *,
    s3: Any,
    bucket: str,
    scratch_root: Path | None = None,
    deadline: float | None = None,
    partial_key: str | None = None,
) -> list[Delivered]:
    """Send a FINISHED export's file(s) to one destination; what each file became there (path, bytes, sha256 of
    exactly what was sent). Downloads from the export's `bucket` through `s3` into a scratch folder (under
    `scratch_root`) that is removed afterwards, whatever happens; raises a DeliveryError (one sentence). Past
    `deadline` (time.monotonic()) every transfer stops: a RetryableDeliveryError. `partial_key` names an SFTP
    upload's partial files (the same for every attempt of one delivery, see `SftpSession.upload`)."""
    with tempfile.TemporaryDirectory(prefix="delivery-", dir=scratch_root) as scratch:
        staged = _stage(record, destination, s3, bucket, Path(scratch), deadline)
        if destination["type"] == S3:
            client, target = s3_client(destination, reach), s3_target(destination)
            return [
                s3_transport.upload(client, target, local, name=posixpath.join(f.folder, f.name), deadline=deadline)
                for f, local in staged
            ]
        folder = str(destination.get("path") or "")
        atomic = destination["type"] != SFMC  # File Drop automations start on an upload, not on a rename
        with sftp.open_session(sftp_target(destination, secrets), allow_private=reach.allow_private) as session:
            sent = []
            for outgoing, local in staged:
                path = posixpath.join(folder, outgoing.folder) if outgoing.folder else folder
                if outgoing.folder:
                    session.make_folder(path)
                sent.append(
                    session.upload(
                        local, path=path, name=outgoing.name, atomic=atomic, deadline=deadline, partial_key=partial_key
                    )
                )
            return sent
