"""The `destinations` collection (SPEC §13): where a campaign's finished files are pushed.

One document per destination: `id`, `campaignId`, `type` (`sftp`, `s3`, `sfmc`), `name`, the type's fields
as the API names them, the optional `pgpPublicKey` (with its `pgpFingerprint`) and `fileName`, `createdBy`,
`createdAt`, a `slot` (0..MAX_PER_CAMPAIGN-1, unique per campaign: concurrent POSTs never pass the limit,
export_core/slots.py) and `encryptedSecrets`: what is write-only — an SFTP `password`, or the `privateKey`
of a key pair the service generated (`generateKey: true`; its public half is `publicKey`, shown to the
partner) — as one JSON object encrypted with SECRETS_KEY (export_core/secrets.py). Only `login_secrets`
decrypts it, for a delivery or a test; no view carries it.

`parse_destination` checks a POST body field by field (DestinationInvalid names the field for the 400): all
but its `pgpPublicKey` (`read_destination`), then that key with gpg (`check_pgp_key`); the SFTP host's
addresses are checked separately (`check_host`), since that needs DNS.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import string
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from export_core.destinations import DeliveryError, pgp, sftp
from export_core.destinations.s3 import ACLS
from export_core.outbox import DELIVERED, PENDING, DeliveryQueue
from export_core.records import DELIVERY_OUTBOX_FIELD, utcnow
from export_core.secrets import SecretBox, UnreadableSecret
from export_core.slots import insert_in_free_slot
from export_core.views import to_json
from export_core.vocabulary import COMMON_FIELDS, DEFAULT_PORT, S3, SFMC
from export_core.vocabulary import DESTINATION_FIELDS as FIELDS
from export_core.vocabulary import DESTINATION_TYPES as TYPES

DESTINATIONS = "destinations"
DELIVERIES = "destination_deliveries"  # one document per (export, destination), see export_core/outbox.py
# After the 1st, 2nd, ... failed attempt the next one waits this long (a partner's maintenance window, a
# restart); after the last, about seven hours after the first, the delivery is given up.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
)
MAX_PER_CAMPAIGN = 10
PASSWORD, KEY = "password", "key"  # how an SFTP destination logs in (`auth`)
MAX_NAME_LENGTH = 100
MAX_HOST_LENGTH = 253
MAX_USERNAME_LENGTH = 128
MAX_PASSWORD_LENGTH = 1024
MAX_PATH_LENGTH = 1024
MAX_HOST_KEY_LENGTH = 16 * 1024
MAX_PREFIX_LENGTH = 1024
MAX_FILE_NAME_LENGTH = 200

# fileName placeholders: what a delivered name may be built from (rendered by `delivered_name`).
FILE_NAME_FIELDS = ("name", "ext", "exportId", "exportType", "campaignId", "date", "time")
_FILE_NAME_SAMPLE = {
    "name": "Summer Tour - entries",
    "ext": "csv",
    "exportId": "0" * 32,
    "exportType": "entries",
    "campaignId": "123",
    "date": "20240115",
    "time": "103000",
}


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"({_LABEL}\.)*{_LABEL}\.?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9+=,.@:/_-]{2,1224}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A storage detail the API never shows, and the write-only sub-document.
SECRETS_FIELD = "encryptedSecrets"
HIDDEN = ("_id", "slot", SECRETS_FIELD)


class DestinationInvalid(ValueError):
    """A destination the service refuses; `field` is the one to blame (a 400 names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooManyDestinations(Exception):
    """The campaign has its maximum of destinations already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"This campaign already has {limit} destinations; remove one before adding another.")
        self.limit = limit


@dataclass(frozen=True)
class DestinationRequest:
    """A checked POST body: the fields shown as given, and `generate_key` or the password (write-only)."""

    type: str
    fields: dict[str, Any]
    password: str | None = None
    generate_key: bool = False


# -- checking a POST body ---------------------------------------------------------------------------


def _text(
    body: dict[str, Any], field: str, *, max_length: int, required: bool = True, default: str = "", lines: bool = False
) -> str:
    """A string field; `lines` lets it hold several lines (what ssh-keyscan prints)."""
    value = body.get(field, None if required else default)
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_length:
        wanted = "a non-empty string" if required else "a string"
        raise DestinationInvalid(field, f"'{field}' must be {wanted} of at most {max_length} characters.")
    if _CONTROL.search(value.replace("\r\n", "\n").replace("\n", "").replace("\t", " ") if lines else value):
        raise DestinationInvalid(field, f"'{field}' must not contain control characters.")
    return value


def _host(body: dict[str, Any]) -> str:
    host = _text(body, "host", max_length=MAX_HOST_LENGTH).strip()
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise DestinationInvalid("host", "'host' must be a host name or an IP address, without a port or user.")
    return host.rstrip(".").lower()


def _port(body: dict[str, Any]) -> int:
    port = body.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DestinationInvalid("port", "'port' must be an integer from 1 to 65535.")
    return port


def _folder(path: str) -> str:
    """The folder without a trailing `/` (but `/` itself); "" is the login folder."""
    return path.rstrip("/") or ("/" if path.startswith("/") else "")


def _sftp_fields(body: dict[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
    fields: dict[str, Any] = {
        "host": _host(body),
        "port": _port(body),
        "username": _text(body, "username", max_length=MAX_USERNAME_LENGTH),
        "path": _folder(_text(body, "path", max_length=MAX_PATH_LENGTH, required=False)),
    }
    if "hostKey" not in body:
        raise DestinationInvalid("hostKey", "'hostKey' is required: the server's host key, pinned (see ssh-keyscan).")
    host_key = _text(body, "hostKey", max_length=MAX_HOST_KEY_LENGTH, lines=True).strip()
    try:
        sftp.parse_host_key(host_key)
    except ValueError as exc:
        raise DestinationInvalid("hostKey", str(exc)) from None
    fields["hostKey"] = host_key
    generate = body.get("generateKey", False)
    if not isinstance(generate, bool):
        raise DestinationInvalid("generateKey", "'generateKey' must be true or false.")
    has_password = "password" in body
    if has_password and generate:
        raise DestinationInvalid("generateKey", "Give either 'password' or 'generateKey': true, not both.")
    if not has_password and not generate:
        raise DestinationInvalid("password", "An SFTP destination needs 'password' or 'generateKey': true.")
    password = None
    if has_password:
        password = body["password"]
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
            raise DestinationInvalid(
                "password", f"'password' must be a string of 1 to {MAX_PASSWORD_LENGTH} characters."
            )
    fields["auth"] = KEY if generate else PASSWORD
    return fields, password, generate


def _s3_fields(body: dict[str, Any]) -> dict[str, Any]:
    bucket = _text(body, "bucket", max_length=63)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise DestinationInvalid(
            "bucket", "'bucket' must be an S3 bucket name (3 to 63 lower-case letters, digits, . or -)."
        )
    region = _text(body, "region", max_length=32)
    if not _REGION.fullmatch(region):
        raise DestinationInvalid("region", "'region' must be an AWS region name, e.g. 'us-east-1'.")
    fields: dict[str, Any] = {
        "bucket": bucket,
        "prefix": _text(body, "prefix", max_length=MAX_PREFIX_LENGTH, required=False).strip("/"),
        "region": region,
        "acl": body.get("acl", ACLS[0]),
    }
    if fields["acl"] not in ACLS:
        raise DestinationInvalid("acl", f"'acl' must be one of: {', '.join(ACLS)}.")
    if "roleArn" in body:
        role = _text(body, "roleArn", max_length=2048)
        if not _ROLE_ARN.fullmatch(role):
            raise DestinationInvalid(
                "roleArn", "'roleArn' must be an IAM role ARN, e.g. 'arn:aws:iam::123456789012:role/x'."
            )
        fields["roleArn"] = role
    if "externalId" in body:
        if "roleArn" not in fields:
            raise DestinationInvalid("externalId", "'externalId' is only used with a 'roleArn'.")
        external = _text(body, "externalId", max_length=1224)
        if not _EXTERNAL_ID.fullmatch(external):
            raise DestinationInvalid(
                "externalId", "'externalId' must be 2 to 1224 letters, digits or any of +=,.@:/_-."
            )
        fields["externalId"] = external
    return fields


def check_file_name(template: object, destination_type: str) -> str:
    """A `fileName` template: placeholders among FILE_NAME_FIELDS, a plain file name once rendered. For `sfmc`
    it must carry `{name}` and `{exportId}`: a run's several files, and two runs, never share a name."""
    if not isinstance(template, str) or not template or len(template) > MAX_FILE_NAME_LENGTH:
        raise DestinationInvalid("fileName", f"'fileName' must be a string of 1 to {MAX_FILE_NAME_LENGTH} characters.")
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError:
        raise DestinationInvalid("fileName", "'fileName' has an unbalanced '{' or '}'.") from None
    unknown = sorted(used - set(FILE_NAME_FIELDS))
    if unknown:
        raise DestinationInvalid(
            "fileName",
            f"'fileName' may use {', '.join('{' + f + '}' for f in FILE_NAME_FIELDS)}; not '{{{unknown[0][:50]}}}'.",
        )
    if destination_type == SFMC and not {"name", "exportId"} <= used:
        raise DestinationInvalid(
            "fileName", "An sfmc destination's 'fileName' must use {name} and {exportId}, so files never collide."
        )
    sample = template.format(**_FILE_NAME_SAMPLE)
    if "/" in sample or "\\" in sample or _CONTROL.search(sample) or sample.strip(". ") == "":
        raise DestinationInvalid("fileName", "'fileName' must give a plain file name, without '/' or '\\'.")
    return template


def parse_destination(body: object) -> DestinationRequest:
    """Validate a POST body (SPEC §13) into a DestinationRequest, or raise DestinationInvalid naming the field:
    `read_destination`, then `check_pgp_key`."""
    return check_pgp_key(read_destination(body))


def read_destination(body: object) -> DestinationRequest:
    """Every check of a POST body but the `pgpPublicKey` one, which runs gpg (`check_pgp_key`, the last check):
    pure and quick, so the API runs it while it reads the body. A `pgpPublicKey` is kept as given until then."""
    if not isinstance(body, dict):
        raise DestinationInvalid("body", "Request body must be a JSON object.")
    kind = body.get("type")
    if kind not in TYPES:
        raise DestinationInvalid("type", f"'type' must be one of: {', '.join(TYPES)}.")
    unknown = sorted(str(k) for k in body if k not in COMMON_FIELDS + FIELDS[kind])
    if unknown:
        raise DestinationInvalid(unknown[0][:100], f"Unknown field for a {kind} destination: '{unknown[0][:100]}'.")
    password, generate = None, False
    if kind == S3:
        fields = _s3_fields(body)
        default_name = f"s3://{fields['bucket']}/{fields['prefix']}".rstrip("/")
    else:
        fields, password, generate = _sftp_fields(body)
        default_name = f"{fields['host']}:{fields['path'] or '.'}"
    fields = {"name": _text(body, "name", max_length=MAX_NAME_LENGTH) if "name" in body else default_name, **fields}
    if "fileName" in body:
        fields["fileName"] = check_file_name(body["fileName"], kind)
    if "pgpPublicKey" in body:
        fields["pgpPublicKey"] = body["pgpPublicKey"]
    return DestinationRequest(kind, fields, password, generate)


def check_pgp_key(request: DestinationRequest) -> DestinationRequest:
    """The request with its `pgpPublicKey` checked by gpg (export_core/destinations/pgp.py) and its
    `pgpFingerprint`: an expired, revoked, private, signing-only or unreadable key is refused here
    (DestinationInvalid('pgpPublicKey')), not at the first delivery."""
    if "pgpPublicKey" not in request.fields:
        return request
    fields = dict(request.fields)
    armored = fields.pop("pgpPublicKey")
    try:
        fields["pgpFingerprint"] = pgp.check_public_key(armored)
    except ValueError as exc:
        raise DestinationInvalid("pgpPublicKey", str(exc)) from None
    fields["pgpPublicKey"] = armored.strip()
    return replace(request, fields=fields)


def check_host(request: DestinationRequest, *, allow_private: bool) -> None:
    """An SFTP host must resolve to addresses the webhook rules allow (SPEC §11, §13); DestinationInvalid('host')."""
    if request.type == S3:
        return
    host, port = request.fields["host"], request.fields["port"]
    try:
        sftp.checked_addresses(host, port, allow_private=allow_private)
    except DeliveryError as exc:
        raise DestinationInvalid("host", str(exc)) from None


def sent_files(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """`[{remotePath, bytes, sha256}]` of a delivered delivery: what its successful (last) attempt sent."""
    attempts = doc.get("attempts") or []
    return list(attempts[-1].get("files") or []) if doc.get("status") == DELIVERED and attempts else []


def delivery_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A delivery as GET .../deliveries shows it: `remotePath`, `bytes`, `sha256` of what was sent (for several
    files, e.g. sfmc's regional CSVs: the folder they share, their total and no single sha256; `files` lists
    each), and its attempts, newest first, each `{at, error}`; `reason` when it failed."""
    files = sent_files(doc)
    paths = [str(f["remotePath"]) for f in files]
    shared = os.path.commonprefix(paths)
    view: dict[str, Any] = {
        "destinationId": doc.get("destinationId"),
        "status": doc.get("status", PENDING),
        "remotePath": paths[0] if len(paths) == 1 else shared[: shared.rfind("/")] if paths else None,
        "bytes": sum(int(f["bytes"]) for f in files) if files else None,
        "sha256": files[0]["sha256"] if len(files) == 1 else None,
        "files": files,
        "attempts": [{"at": a.get("at"), "error": a.get("error")} for a in reversed(doc.get("attempts") or [])],
        "createdAt": doc.get("createdAt"),
        "nextAttemptAt": doc.get("nextAttemptAt"),
    }
    if doc.get("reason"):
        view["reason"] = doc["reason"]
    return dict(to_json(view))


# -- the store ----------------------------------------------------------------------------------------


def destination_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A destination as the API shows it: never its secrets."""
    return dict(to_json({k: v for k, v in doc.items() if k not in HIDDEN}))


class DestinationStore:
    """Create, list, read and remove a campaign's destinations; the login secrets for a delivery."""

    def __init__(self, db: Database) -> None:
        self.destinations = db[DESTINATIONS]
        self.schedules = db["schedules"]
        self.exports = db["exports"]
        self.deliveries_queue = DeliveryQueue(db, DELIVERIES, RETRY_DELAYS, announces=True)

    def ensure_indexes(self) -> None:
        """Idempotent: the per-campaign limit (slots), the export records' destination outbox, due deliveries
        and an export's deliveries."""
        self.destinations.create_index(
            [("campaignId", ASCENDING), ("slot", ASCENDING)], name="one_per_slot", unique=True
        )
        self.deliveries_queue.ensure_indexes()
        self.deliveries_queue.collection.create_index([("exportId", ASCENDING)], name="by_export")
        # Sparse: only records whose deliveries are not yet stored are in it (a handful).
        self.exports.create_index([(f"{DELIVERY_OUTBOX_FIELD}.at", ASCENDING)], name="destination_outbox", sparse=True)

    def create(
        self, *, campaign_id: str, request: DestinationRequest, created_by: str, secret_box: SecretBox
    ) -> dict[str, Any]:
        """Insert a destination in a free slot (TooManyDestinations when none is free); with `generateKey`, a new
        ed25519 key pair: the private key among the encrypted secrets, the OpenSSH public line in `publicKey`."""
        secrets: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if request.password is not None:
            secrets["password"] = request.password
        if request.generate_key:
            secrets["privateKey"], extra["publicKey"] = sftp.generate_key_pair()

        def doc() -> dict[str, Any]:
            destination_id = uuid.uuid4().hex
            return {
                "_id": destination_id,
                "id": destination_id,
                "campaignId": campaign_id,
                "type": request.type,
                **request.fields,
                **extra,
                "createdBy": created_by,
                "createdAt": utcnow(),
                SECRETS_FIELD: secret_box.encrypt(json.dumps(secrets)),
            }

        return insert_in_free_slot(
            self.destinations, campaign_id, MAX_PER_CAMPAIGN, doc, TooManyDestinations(MAX_PER_CAMPAIGN)
        )

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]:
        """The campaign's destinations, oldest first, without their secrets."""
        found = self.destinations.find({"campaignId": campaign_id}, {SECRETS_FIELD: 0})
        return list(found.sort([("createdAt", ASCENDING), ("_id", ASCENDING)]))

    def get(self, campaign_id: str, destination_id: str) -> dict[str, Any] | None:
        """One of the campaign's destinations (never another campaign's), without its secrets."""
        return self.destinations.find_one({"_id": destination_id, "campaignId": campaign_id}, {SECRETS_FIELD: 0})

    def unknown_ids(self, campaign_id: str, ids: list[str] | tuple[str, ...]) -> list[str]:
        """The ids among `ids` that are not destinations of the campaign, in their order."""
        found = {
            d["_id"] for d in self.destinations.find({"campaignId": campaign_id, "_id": {"$in": list(ids)}}, {"_id": 1})
        }
        return [i for i in ids if i not in found]

    def deliveries(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The deliveries of an export, in the order of its destinations: stored ones, and those its outbox still
        holds (stored with FINISHED, not yet handed to the delivery sensor: pending, no attempt yet)."""
        stored = {d["destinationId"]: d for d in self.deliveries_queue.collection.find({"exportId": record["_id"]})}
        for entry in record.get(DELIVERY_OUTBOX_FIELD) or []:
            stored.setdefault(entry["destinationId"], {**entry, "status": PENDING, "createdAt": entry["at"]})
        order = {d: i for i, d in enumerate(record.get("destinations") or [])}
        found = sorted(stored.values(), key=lambda d: (order.get(d["destinationId"], len(order)), d["createdAt"]))
        return [delivery_view(d) for d in found]

    def login_secrets(self, destination_id: str, secret_box: SecretBox) -> dict[str, str]:
        """The write-only part of a destination (`password` or `privateKey`), decrypted, for a delivery or a test
        only; {} when it has none (or is gone); UnreadableSecret when no key of SECRETS_KEY decrypts it."""
        doc = self.destinations.find_one({"_id": destination_id}, {SECRETS_FIELD: 1}) or {}
        return dict(json.loads(secret_box.decrypt(str(doc[SECRETS_FIELD])))) if doc.get(SECRETS_FIELD) else {}

    def rotate_secrets(self, secret_box: SecretBox) -> tuple[int, list[str]]:
        """Encrypt every destination's secrets anew with the first key of SECRETS_KEY (`python -m
        export_pipelines.indexes`): how many were, and the ids of those no key decrypts (left as they are)."""
        rotated, unreadable = 0, []
        for doc in self.destinations.find({SECRETS_FIELD: {"$exists": True}}, {SECRETS_FIELD: 1}):
            try:
                token = secret_box.rotated(str(doc[SECRETS_FIELD]))
            except UnreadableSecret:
                unreadable.append(str(doc["_id"]))
                continue
            if token is not None:
                self.destinations.update_one({"_id": doc["_id"]}, {"$set": {SECRETS_FIELD: token}})
                rotated += 1
        return rotated, unreadable

    def delete(self, campaign_id: str, destination_id: str) -> bool:
        """Remove the destination and take it out of the campaign's schedules (their later runs no longer name it)."""
        removed = self.destinations.delete_one({"_id": destination_id, "campaignId": campaign_id}).deleted_count == 1
        if removed:
            self.schedules.update_many(
                {"campaignId": campaign_id, "destinations": destination_id},
                {"$pull": {"destinations": destination_id}, "$set": {"updatedAt": utcnow()}},
            )
        return removed
