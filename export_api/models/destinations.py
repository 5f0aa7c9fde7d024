"""Bodies of the destination endpoints (SPEC §13): the POST, a destination, its test, an export's deliveries.

A POST body is checked by the domain's own parser (export_core/destination_store.py `read_destination`), so
its sentences, and the field each 400 names in `payload` (e.g. `hostKey`), are the ones the domain and its
tests pin; the document describes it as one of the per-type shapes below. Secrets (`password`) are
write-only: no response model has them, and no refusal echoes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from export_api.models.base import Body, decoded, invalid
from export_core.destination_store import (
    FILE_NAME_FIELDS,
    MAX_FILE_NAME_LENGTH,
    MAX_HOST_KEY_LENGTH,
    MAX_HOST_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PER_CAMPAIGN,
    MAX_PREFIX_LENGTH,
    MAX_USERNAME_LENGTH,
    DestinationInvalid,
    read_destination,
)
from export_core.destination_store import DestinationRequest as CheckedDestination
from export_core.outbox import DELIVERED, GAVE_UP, PENDING
from export_core.vocabulary import DEFAULT_FILE_NAME, DEFAULT_PORT, DESTINATION_TYPES, S3_ACLS


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional field without a default of its own is left out when not given, never null: its schema
    loses the `default: null` and the null branch pydantic writes for `X | None = None`."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]
            branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
            prop.update(branches[0] if len(branches) == 1 else {"anyOf": branches} if branches else {})


class Shape(BaseModel):
    """A body as the document describes it: exactly its fields; optional ones absent rather than null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)


# -- the POST body, per type ----------------------------------------------------------------------


DEFAULT_NAME = "Shown in lists; default: the host and folder, or bucket."


class DestinationFields(Shape):
    """What every type takes."""

    type: str
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH, description=DEFAULT_NAME)
    pgpPublicKey: str | None = Field(
        None,
        description="ASCII-armoured OpenPGP public key: files are encrypted to it and `.pgp` is appended."
        " Expired, revoked, signing-only and private keys are refused.",
    )
    fileName: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILE_NAME_LENGTH,
        description=f"The delivered name, a template of {', '.join('{' + f + '}' for f in FILE_NAME_FIELDS)};"
        f" default `{DEFAULT_FILE_NAME}`. For sfmc it must use {{name}} and {{exportId}}.",
    )


class SftpFields(DestinationFields):
    """An SFTP server (sftp; sfmc, a Marketing Cloud Enhanced FTP account): where, as whom, its pinned key."""

    host: str = Field(
        min_length=1,
        max_length=MAX_HOST_LENGTH,
        description="Host name or IP address; public addresses only (loopback/private too with"
        " WEBHOOK_ALLOW_PRIVATE=1; link-local never).",
    )
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=MAX_USERNAME_LENGTH)
    path: str = Field("", max_length=MAX_PATH_LENGTH, description="The folder files go to (it must exist).")
    hostKey: str = Field(
        min_length=1,
        max_length=MAX_HOST_KEY_LENGTH,
        description="The server's host key, pinned: known_hosts line(s) (what ssh-keyscan prints) or a"
        " `SHA256:` fingerprint.",
    )


class PasswordLogin(SftpFields):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH, json_schema_extra={"writeOnly": True})


class GeneratedKeyLogin(SftpFields):
    generateKey: Literal[True] = Field(
        description="The service makes an ed25519 key pair; the 201 answers the public key to authorize."
    )


class SftpWithPassword(PasswordLogin):
    type: Literal["sftp"]


class SftpWithGeneratedKey(GeneratedKeyLogin):
    type: Literal["sftp"]


class SfmcWithPassword(PasswordLogin):
    type: Literal["sfmc"]


class SfmcWithGeneratedKey(GeneratedKeyLogin):
    type: Literal["sfmc"]


class S3Bucket(DestinationFields):
    """A bucket of the partner's, written with the service's credentials or a role of theirs (STS)."""

    type: Literal["s3"]
    bucket: str = Field(pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field("", max_length=MAX_PREFIX_LENGTH, description="The folder in the bucket (empty: the top).")
    region: str = Field(pattern="^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", examples=["eu-west-1"])
    roleArn: str | None = Field(
        None,
        pattern="^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$",
        description="A role in the partner's account, assumed (STS) per delivery.",
    )
    externalId: str | None = Field(None, pattern="^[A-Za-z0-9+=,.@:/_-]{2,1224}$", description="Only with `roleArn`.")
    acl: Literal[S3_ACLS] = S3_ACLS[0]  # type: ignore[valid-type]


REQUEST_SHAPES: TypeAdapter[Any] = TypeAdapter(
    SftpWithPassword | SftpWithGeneratedKey | SfmcWithPassword | SfmcWithGeneratedKey | S3Bucket
)


class DestinationRequest(Body):
    """A POST body, checked by `read_destination` as it is read; `check_pgp_key` and `check_host` (gpg, DNS)
    come after, off the event loop."""

    checked: CheckedDestination

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        try:
            return {"checked": read_destination(decoded(data))}
        except DestinationInvalid as exc:
            raise invalid(str(exc), exc.field) from None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # The shapes exclude one another (by `type`, and `password` or `generateKey`): oneOf.
        shapes = handler(REQUEST_SHAPES.core_schema)
        return {
            "description": "A destination (SPEC §13): `sftp`, `s3` or `sfmc` (an SFTP destination on a Marketing"
            " Cloud Enhanced FTP account), with `password` or `generateKey: true` for the SFTP types.",
            "oneOf": shapes["anyOf"],
            "example": {
                "type": "sftp",
                "host": "sftp.partner.example",
                "username": "verifiedfan",
                "path": "/incoming",
                "hostKey": "sftp.partner.example ssh-ed25519"
                " AAAAC3NzaC1lZDI1NTE5AAAAIG9dMmqxaW+S+sCXuY79Jqr6MyZAxlE6jTwUV8PdRYUz",
                "generateKey": True,
            },
        }


# -- answers --------------------------------------------------------------------------------------


class Destination(Shape):
    """A destination as stored; never its password or private key."""

    id: str
    campaignId: str
    type: Literal[DESTINATION_TYPES]  # type: ignore[valid-type]
    name: str
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    path: str | None = None
    hostKey: str | None = None
    auth: Literal["password", "key"] | None = Field(None, description="How it logs in (sftp, sfmc).")
    publicKey: str | None = Field(None, description="The OpenSSH public key to authorize (generateKey).")
    bucket: str | None = None
    prefix: str | None = None
    region: str | None = None
    roleArn: str | None = None
    externalId: str | None = None
    acl: Literal[S3_ACLS] | None = None  # type: ignore[valid-type]
    fileName: str | None = None
    pgpFingerprint: str | None = None
    pgpPublicKey: str | None = None
    createdBy: str | None = Field(None, description="The `sub` of the token that added it.")
    createdAt: datetime


class DestinationList(Shape):
    destinations: list[Destination] = Field(max_length=MAX_PER_CAMPAIGN)


class DestinationTest(Shape):
    """`ok` with what was checked, or not with what failed."""

    ok: bool
    message: str = Field(description="One sentence.")


class DeliveredFile(BaseModel):
    remotePath: str = Field(description="The SFTP path, or s3://bucket/key.")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class DeliveryAttempt(BaseModel):
    at: datetime
    error: str | None = Field(description="One plain sentence; null for the attempt that succeeded.")


class Delivery(BaseModel):
    """One export's delivery to one destination. `remotePath`, `bytes` and `sha256` describe what was sent (for
    several files, sfmc's regional CSVs: their folder, their total and no single sha256; `files` lists each)."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    destinationId: str
    status: Literal[PENDING, DELIVERED, GAVE_UP]  # type: ignore[valid-type]
    remotePath: str | None
    bytes: int | None = Field(ge=0)
    sha256: str | None
    files: list[DeliveredFile]
    attempts: list[DeliveryAttempt] = Field(description="Newest first.")
    createdAt: datetime | None = None
    nextAttemptAt: datetime | None
    reason: str | None = Field(None, description="Why it failed (status failed).")


class DeliveryList(Shape):
    deliveries: list[Delivery]
